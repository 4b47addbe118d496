"""config, schema, multi-database, migrations.

The test settings define a second alias, ``secondary``; these tests point
``CHRONO_FORGE["DATABASE"]`` (and the router) at it.
"""

from __future__ import annotations

import ast
import inspect
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections, router, transaction
from django.db import models as dj_models
from django.test import override_settings
from django.utils.module_loading import import_string

import chrono_forge
from chrono_forge import checks, conf
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.routers import ChronoForgeRouter
from tests import workflows_ops as w

SECOND = "secondary"
ROUTED = override_settings(
    CHRONO_FORGE={"DATABASE": SECOND}, DATABASE_ROUTERS=["chrono_forge.routers.ChronoForgeRouter"]
)
MODELS = (Workflow, ExecutionLog, ErrorLog)


def rows(alias: str) -> tuple[int, int, int]:
    return tuple(model._base_manager.using(alias).count() for model in MODELS)


# -- end to end on the second alias ----------------------------------------------------------------
@pytest.mark.django_db(databases=["default", SECOND])
def test_a_workflow_runs_entirely_on_the_configured_database(chrono_forge_env):
    with ROUTED:
        wf = w.OneStep.perform_later("multi", value=1)
        assert wf._state.db == SECOND
        chrono_forge_env.run_all()
        wf = Workflow.objects.get(key="multi")
        assert wf.state == "completed"
        assert wf.context == {"result": 42}
        assert wf.execution_logs.count() == 2
        assert rows(SECOND) == (1, 2, 0)
    assert rows("default") == (0, 0, 0)


@pytest.mark.django_db(databases=["default", SECOND])
def test_errors_retries_and_operator_actions_stay_on_the_configured_database(chrono_forge_env):
    with ROUTED:
        w.NeedsFix.perform_later("fix-me")
        chrono_forge_env.run_all()
        wf = Workflow.objects.get(key="fix-me")
        assert wf.state == "failed"
        wf.context = {"fixed": True}
        wf.save(update_fields=["context"])  # a plain save() is routed too
        wf.retry_later()
        chrono_forge_env.run_all()
        wf.refresh_from_db()
        assert wf.state == "completed"
        assert rows(SECOND)[2] == 1
    assert rows("default") == (0, 0, 0)


@pytest.mark.django_db(databases=["default", SECOND], transaction=True)
def test_enqueue_is_transactional_with_the_orm_broker_on_the_same_alias(monkeypatch):
    """Q_CLUSTER["orm"] on chrono_forge's alias: a rolled-back admission leaves no row, no task."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    from chrono_forge.dispatch.django_q import DjangoQDispatcher

    monkeypatch.setattr(Conf, "ORM", SECOND)
    with (
        ROUTED,
        override_settings(
            CHRONO_FORGE={
                "DATABASE": SECOND,
                "DISPATCHER": "chrono_forge.dispatch.django_q.DjangoQDispatcher",
            }
        ),
    ):
        assert DjangoQDispatcher().transactional()
        with pytest.raises(RuntimeError), transaction.atomic(using=SECOND):
            w.OneStep.perform_later("rolled-back")
            assert OrmQ.objects.using(SECOND).count() == 1
            raise RuntimeError("roll back")
        assert OrmQ.objects.using(SECOND).count() == 0
        assert not Workflow.objects.filter(key="rolled-back").exists()

        w.OneStep.perform_later("kept")
        assert OrmQ.objects.using(SECOND).count() == 1
    assert OrmQ.objects.using("default").count() == 0
    assert rows("default") == (0, 0, 0)


# -- the router ------------------------------------------------------------------------------------
def test_router_sends_chrono_forge_models_to_the_configured_alias():
    r = ChronoForgeRouter()
    from django.contrib.auth.models import User

    assert [r.db_for_read(m) for m in MODELS] == [
        "default"
    ] * 3  # the default without configuration
    with override_settings(CHRONO_FORGE={"DATABASE": SECOND}):
        assert [r.db_for_read(m) for m in MODELS] == [SECOND] * 3
        assert [r.db_for_write(m) for m in MODELS] == [SECOND] * 3
        assert (
            r.db_for_read(User) is None and r.db_for_write(User) is None
        )  # other apps: not ours to say


def test_migrations_of_chrono_forge_only_on_the_configured_alias():
    r = ChronoForgeRouter()
    assert r.allow_migrate("default", "chrono_forge") is True
    assert r.allow_migrate(SECOND, "chrono_forge", model_name="workflow") is False
    assert (
        r.allow_migrate(SECOND, "auth") is None and r.allow_migrate("default", "django_q") is None
    )
    with ROUTED:
        assert router.allow_migrate_model(SECOND, Workflow)
        assert not router.allow_migrate_model("default", Workflow)
        assert router.allow_migrate_model("default", Workflow._meta.apps.get_model("auth", "User"))


def test_relations_between_chrono_forge_rows_are_allowed_others_left_to_django():
    from django.contrib.auth.models import User

    r = ChronoForgeRouter()
    assert r.allow_relation(Workflow(), ExecutionLog()) is True
    assert r.allow_relation(Workflow(), User()) is None


def test_every_atomic_block_in_chrono_forge_names_the_database():
    """``transaction.atomic()`` / ``on_commit()`` without ``using`` would act on ``default`` while
    the queries go to ``CHRONO_FORGE["DATABASE"]``."""
    root = Path(chrono_forge.__file__).parent
    calls, offenders = 0, []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("atomic", "on_commit")
                and getattr(node.func.value, "id", None) == "transaction"
            ):
                calls += 1
                if "using" not in {k.arg for k in node.keywords}:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert calls >= 5  # the scan does see them
    assert offenders == []


# -- W003 ------------------------------------------------------------------------------------------
def check_ids():
    return [m.id for m in checks.check_django_q()]


def test_w003_warns_when_the_orm_broker_is_on_another_alias(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "orm": "default"}
    settings.CHRONO_FORGE = {"DATABASE": SECOND}
    assert "chrono_forge.W003" in check_ids()
    [message] = [m for m in checks.check_django_q() if m.id == "chrono_forge.W003"]
    assert "on_commit" in message.hint and "resume-overdue" in message.hint


def test_w003_silent_when_broker_and_tables_share_the_alias(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "orm": SECOND}
    settings.CHRONO_FORGE = {"DATABASE": SECOND}
    assert "chrono_forge.W003" not in check_ids()
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "orm": "default"}
    settings.CHRONO_FORGE = {}
    assert "chrono_forge.W003" not in check_ids()


# -- models and schema -----------------------------------------------------------------------------
def test_models_inherit_the_librarys_own_abstract_base():
    from model_utils.models import TimeStampedModel

    for model in MODELS:
        assert issubclass(model, TimeStampedModel)
        foreign = [
            c
            for c in model.__mro__
            if c.__module__.split(".")[0]
            not in ("chrono_forge", "model_utils", "django", "builtins")
        ]
        assert foreign == [], (model, foreign)


@pytest.mark.django_db
def test_schema_indexes_exist_in_the_database():
    connection = connections["default"]
    with connection.cursor() as cursor:
        wf = connection.introspection.get_constraints(cursor, Workflow._meta.db_table)
        log = connection.introspection.get_constraints(cursor, ExecutionLog._meta.db_table)
    wf_indexes = {tuple(c["columns"]) for c in wf.values() if c["index"] or c["unique"]}
    wf_unique = {tuple(c["columns"]) for c in wf.values() if c["unique"]}
    log_unique = {tuple(c["columns"]) for c in log.values() if c["unique"]}
    assert ("state", "completed_at") in wf_indexes
    assert ("parent_execution_log_id", "state", "id") in wf_indexes
    assert ("key",) in wf_indexes
    assert ("job_class", "key") in wf_unique
    assert ("workflow_id", "step_name") in log_unique


@pytest.mark.django_db
def test_primary_key_defaults_to_big_integer():
    assert conf.primary_key_field_path() == "django.db.models.BigAutoField"
    for model in MODELS:
        assert type(model._meta.pk) is dj_models.BigAutoField
    connection = connections["default"]
    with connection.cursor() as cursor:
        columns = {
            c.name: c
            for c in connection.introspection.get_table_description(cursor, "chrono_forge_workflow")
        }
    field_type = connection.introspection.get_field_type(columns["id"].type_code, columns["id"])
    if connection.vendor == "postgresql":
        assert field_type == "BigAutoField"
    else:  # SQLite's INTEGER PRIMARY KEY is always a 64-bit rowid
        assert columns["id"].type_code.lower() == "integer"


def test_primary_key_follows_default_auto_field_and_explicit_config_wins(settings):
    settings.DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
    settings.CHRONO_FORGE = {}
    assert type(conf.primary_key_field()) is dj_models.AutoField
    settings.CHRONO_FORGE = {"PRIMARY_KEY_FIELD": "django.db.models.UUIDField"}
    field = conf.primary_key_field()
    assert type(field) is dj_models.UUIDField and field.primary_key and callable(field.default)
    assert field.default() != field.default()
    settings.CHRONO_FORGE = {"PRIMARY_KEY_FIELD": "django.db.models.BigAutoField"}
    assert type(conf.primary_key_field()) is dj_models.BigAutoField


def test_the_models_use_the_configured_field_class():
    assert all(type(m._meta.pk) is import_string(conf.primary_key_field_path()) for m in MODELS)
    assert "primary_key_field()" in inspect.getsource(
        import_string("chrono_forge.migrations.0001_initial")
    )


@pytest.mark.django_db
def test_migrations_match_the_models():
    out = io.StringIO()
    call_command("makemigrations", "chrono_forge", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_migrating_again_is_a_no_op():
    out = io.StringIO()
    call_command("migrate", "chrono_forge", stdout=out)
    call_command("migrate", "chrono_forge", stdout=out)
    assert out.getvalue().count("No migrations to apply") == 2
