"""System checks: every chrono_forge.E00x / W00x fires for bad settings and stays quiet for good
ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from chrono_forge import conf

# Django 6 model checks inspect the database (JSONField support), so checks need DB access.
pytestmark = pytest.mark.django_db(databases="__all__")

SQLITE_GOOD = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": ":memory:",
    "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
}
Q_GOOD = {"name": "t", "orm": "default", "timeout": 30, "retry": 60}


def ids(**overrides) -> list[str]:
    with override_settings(**overrides):
        return sorted(
            m.id for m in run_checks(databases=[]) if m.id and m.id.startswith("chrono_forge.")
        )


def test_the_test_settings_pass_every_check():
    assert ids() == []


def test_a_fully_configured_chrono_forge_passes():
    good = {
        "MAX_DURATION": timedelta(minutes=5),
        "REAP_STALE_AFTER": 900,
        "RESUME_OVERDUE_GRACE": 60.5,
        "DISPATCHER": "chrono_forge.dispatch.memory.InMemoryDispatcher",
        "CLUSTER": "workflows",
        "BRANCH_MERGE_CLUSTER": "merges",
        "MAINTENANCE_CLUSTER": "maintenance",
        "DATABASE": "default",
        "CONTEXT_VALUE_MAX_BYTES": 1024,
        "RESULT_MAX_BYTES": 2048,
        "ERROR_CONTEXT_MAX_BYTES": 4096,
    }
    assert ids(CHRONO_FORGE=good, Q_CLUSTER=Q_GOOD) == []


def test_e001_not_a_dict():
    assert ids(CHRONO_FORGE=[("MAX_DURATION", 1)]) == ["chrono_forge.E001"]


def test_e002_unknown_setting():
    assert ids(CHRONO_FORGE={"MAX_DURATON": 60}) == ["chrono_forge.E002"]


@pytest.mark.parametrize("name", ["MAX_DURATION", "REAP_STALE_AFTER", "RESUME_OVERDUE_GRACE"])
@pytest.mark.parametrize("value", [0, -5, timedelta(0), "10m", True])
def test_e003_bad_duration(name, value):
    assert ids(CHRONO_FORGE={name: value}) == ["chrono_forge.E003"]


@pytest.mark.parametrize("name", conf.BYTES_SETTINGS + conf.CHARS_SETTINGS)
@pytest.mark.parametrize("value", [0, -1, 1.5, "16KB", True])
def test_e004_bad_byte_limit(name, value):
    assert ids(CHRONO_FORGE={name: value}) == ["chrono_forge.E004"]


def test_e005_dispatcher_not_importable():
    assert ids(CHRONO_FORGE={"DISPATCHER": "chrono_forge.dispatch.nope.Dispatcher"}) == [
        "chrono_forge.E005"
    ]


def test_e006_unknown_database_alias():
    # no ORM alias to disagree with (W003): the ORM broker named by its class
    q_cluster = {
        "name": "t",
        "broker_class": "django_q.brokers.orm.ORM",
        "timeout": 30,
        "retry": 60,
    }
    assert ids(CHRONO_FORGE={"DATABASE": "workflows"}, Q_CLUSTER=q_cluster) == ["chrono_forge.E006"]


@pytest.mark.parametrize("name", ["CLUSTER", "BRANCH_MERGE_CLUSTER", "MAINTENANCE_CLUSTER"])
@pytest.mark.parametrize("value", ["", 3])
def test_e007_bad_cluster_name(name, value):
    assert ids(CHRONO_FORGE={name: value}) == ["chrono_forge.E007"]


@pytest.mark.parametrize(
    "options", [{}, {"transaction_mode": "DEFERRED"}, {"transaction_mode": None}]
)
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w001_sqlite_without_immediate(options):
    databases = {"default": {**settings.DATABASES["default"], **SQLITE_GOOD, "OPTIONS": options}}
    assert ids(DATABASES=databases) == ["chrono_forge.W001"]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w001_quiet_for_immediate_sqlite_and_for_postgresql():
    assert ids(DATABASES={"default": SQLITE_GOOD}) == []
    assert (
        ids(DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}) == []
    )


@pytest.mark.parametrize("q_cluster", [{"timeout": 60, "retry": 60}, {"timeout": 90}])
def test_w002_retry_not_above_timeout(q_cluster):
    assert ids(Q_CLUSTER={"name": "t", "orm": "default", **q_cluster}) == ["chrono_forge.W002"]


def test_w003_orm_broker_on_another_database():
    assert ids(Q_CLUSTER={**Q_GOOD, "orm": "secondary"}) == ["chrono_forge.W003"]


# -- no setting, of any type, crashes a check ------------------------------------------------------
WRONG_TYPES = [object(), ["x"], {"x": 1}, b"bytes", 1j]


def chrono_forge_errors(**overrides) -> list:
    with override_settings(**overrides):
        return [m for m in run_checks(databases=[]) if m.id and m.id.startswith("chrono_forge.E")]


def test_every_setting_has_a_validator():
    from chrono_forge import checks, conf

    assert set(checks.VALIDATORS) == set(conf.DEFAULTS)


@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("name", sorted(__import__("chrono_forge.conf").conf.DEFAULTS))
def test_a_setting_of_the_wrong_type_is_an_error_naming_it(name, value):
    [error] = chrono_forge_errors(CHRONO_FORGE={name: value})
    assert f"CHRONO_FORGE[{name!r}]" in error.msg


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e300, 10**30])
@pytest.mark.parametrize("name", ["MAX_DURATION", "REAP_STALE_AFTER", "RESUME_OVERDUE_GRACE"])
def test_e003_non_finite_or_huge_durations(name, value):
    [error] = chrono_forge_errors(CHRONO_FORGE={name: value})
    assert error.id == "chrono_forge.E003" and f"CHRONO_FORGE[{name!r}]" in error.msg
    assert "finite" in error.msg or "at most 36500 days" in error.msg


def test_e003_the_longest_duration_is_accepted():
    longest = timedelta(days=36500)
    assert ids(CHRONO_FORGE={"RESUME_OVERDUE_GRACE": longest}) == []
    assert ids(CHRONO_FORGE={"RESUME_OVERDUE_GRACE": longest + timedelta(seconds=1)}) == [
        "chrono_forge.E003"
    ]


@pytest.mark.parametrize("value", [0, -1, 2.5, "30"])
def test_e010_bad_task_timeout(value):
    assert ids(CHRONO_FORGE={"TASK_TIMEOUT": value}) == ["chrono_forge.E010"]


@pytest.mark.parametrize(
    "value", ["django.db.models.CharField", "nope.Field", "django.db.models.nope"]
)
def test_e011_bad_primary_key_field(value):
    assert ids(CHRONO_FORGE={"PRIMARY_KEY_FIELD": value}) == ["chrono_forge.E011"]


def test_e011_quiet_for_auto_and_uuid_fields():
    for path in ("django.db.models.BigAutoField", "django.db.models.UUIDField"):
        assert ids(CHRONO_FORGE={"PRIMARY_KEY_FIELD": path}) == []


# -- django-q2 -------------------------------------------------------------------------------------
def test_e012_django_q_not_installed():
    installed = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    with override_settings(INSTALLED_APPS=installed):
        found = sorted(
            m.id for m in run_checks(databases=[]) if m.id and m.id.startswith("chrono_forge.")
        )
    assert found == ["chrono_forge.E012"]


def test_e012_quiet_with_another_dispatcher():
    installed = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    memory = {"DISPATCHER": "chrono_forge.dispatch.memory.InMemoryDispatcher"}
    with override_settings(INSTALLED_APPS=installed, CHRONO_FORGE=memory):
        assert not [
            m for m in run_checks(databases=[]) if m.id and m.id.startswith("chrono_forge.")
        ]


@pytest.fixture
def packages(monkeypatch):
    """``packages(redis=False)`` makes a package look uninstalled, ``=True`` installed."""
    import importlib.machinery
    import sys
    import types

    def set_packages(**installed):
        for name, present in installed.items():
            module = None
            if present:
                module = types.ModuleType(name)
                module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            monkeypatch.setitem(sys.modules, name, module)

    return set_packages


def test_e013_redis_broker_without_the_redis_package(packages):
    packages(redis=False)
    q_cluster = {"name": "t", "timeout": 30, "retry": 60, "redis": {"host": "127.0.0.1"}}
    [error] = chrono_forge_errors(Q_CLUSTER=q_cluster)
    assert error.id == "chrono_forge.E013" and "'redis' package" in error.msg
    packages(redis=True)
    assert chrono_forge_errors(Q_CLUSTER=q_cluster) == []


@pytest.mark.parametrize(
    "q_cluster, package",
    [
        ({"sqs": {"aws_region": "eu-west-1"}}, "boto3"),
        ({"mongo": {"host": "127.0.0.1"}}, "pymongo"),
        ({"iron_mq": {"token": "t"}}, "iron_mq"),
        ({"django_redis": "default"}, "django_redis"),
    ],
)
def test_e013_other_brokers_without_their_package(packages, q_cluster, package):
    packages(**{package: False})
    [error] = chrono_forge_errors(Q_CLUSTER={"name": "t", **q_cluster})
    assert error.id == "chrono_forge.E013" and repr(package) in error.msg
    packages(**{package: True})
    assert chrono_forge_errors(Q_CLUSTER={"name": "t", **q_cluster}) == []


@pytest.mark.parametrize(
    "q_cluster, says",
    [
        ({"orm": "nowhere"}, "Q_CLUSTER['orm'] 'nowhere' is not a key of DATABASES"),
        ({"broker_class": "myapp.brokers.Nope"}, "cannot be imported"),
        ({"broker_class": 7}, "Q_CLUSTER['broker_class'] must be the dotted path"),
        ({"orm": "default", "timeout": "30"}, "Q_CLUSTER['timeout'] must be a positive number"),
        ({"orm": "default", "retry": float("nan")}, "Q_CLUSTER['retry'] must be a positive"),
    ],
)
def test_e013_unusable_q_cluster(q_cluster, says):
    [error] = chrono_forge_errors(Q_CLUSTER={"name": "t", **q_cluster})
    assert error.id == "chrono_forge.E013" and says in error.msg


def test_e013_q_cluster_not_a_dict():
    [error] = chrono_forge_errors(Q_CLUSTER=["orm", "default"])
    assert error.id == "chrono_forge.E013" and "Q_CLUSTER must be a dict" in error.msg


def test_w010_task_timeout_longer_than_max_duration():
    long_timeout = {**Q_GOOD, "timeout": 601, "retry": 700}
    assert ids(Q_CLUSTER=long_timeout) == ["chrono_forge.W010"]
    assert ids(Q_CLUSTER={**Q_GOOD, "timeout": 600, "retry": 700}) == []
    assert ids(Q_CLUSTER=long_timeout, CHRONO_FORGE={"MAX_DURATION": 601}) == []
    assert ids(Q_CLUSTER=Q_GOOD, CHRONO_FORGE={"TASK_TIMEOUT": 900}) == ["chrono_forge.W010"]
    assert ids(Q_CLUSTER=long_timeout, CHRONO_FORGE={"TASK_TIMEOUT": 60}) == []


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    "options, warned",
    [
        ({"CONN_MAX_AGE": 60}, True),
        ({"CONN_MAX_AGE": None}, True),
        ({"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}, False),
        ({"CONN_MAX_AGE": 0}, False),
        ({}, False),
    ],
)
def test_w011_postgresql_persistent_connections_without_health_checks(options, warned):
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", **options}
    assert ids(DATABASES={"default": database}) == (["chrono_forge.W011"] if warned else [])
