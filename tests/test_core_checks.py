"""System checks: every chrono_forge.E00x / W00x fires for bad settings and stays quiet for good
ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

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
        return sorted(m.id for m in run_checks() if m.id and m.id.startswith("chrono_forge."))


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


@pytest.mark.parametrize(
    "name", ["CONTEXT_VALUE_MAX_BYTES", "RESULT_MAX_BYTES", "ERROR_CONTEXT_MAX_BYTES"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5, "16KB", True])
def test_e004_bad_byte_limit(name, value):
    assert ids(CHRONO_FORGE={name: value}) == ["chrono_forge.E004"]


def test_e005_dispatcher_not_importable():
    assert ids(CHRONO_FORGE={"DISPATCHER": "chrono_forge.dispatch.nope.Dispatcher"}) == [
        "chrono_forge.E005"
    ]


def test_e006_unknown_database_alias():
    q_cluster = {"name": "t", "timeout": 30, "retry": 60}  # no ORM alias to disagree with (W003)
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
    assert ids(Q_CLUSTER={"name": "t", **q_cluster}) == ["chrono_forge.W002"]


def test_w003_orm_broker_on_another_database():
    assert ids(Q_CLUSTER={**Q_GOOD, "orm": "queue"}) == ["chrono_forge.W003"]
