"""The registry of workflow classes: registration, autodiscovery, WORKFLOW_MODULES and its check,
and what happens to a workflow whose class this process does not have (stalled, then retried)."""

from __future__ import annotations

import logging
import os
import sys

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from chrono_forge import DurableWorkflow, registry, tasks
from chrono_forge.exceptions import UnregisteredWorkflowClass
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_core as w
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=False)

COUNTER = w.Counter.job_class()


class OnlyInTheTestProcess(DurableWorkflow):
    """Defined in a test module, which WORKFLOW_MODULES does not list: registered in this process
    only, like a class a web process has and a stale worker does not."""

    def perform(self):
        self.durably_execute(self.step)

    def step(self):
        return "ran"


@pytest.fixture
def unregistered():
    """Unregister classes for one test (a worker that runs older code), restored afterwards."""
    removed = {}

    def drop(cls):
        removed[cls.job_class()] = registry.unregister(cls.job_class())

    yield drop
    for cls in removed.values():
        if cls is not None:
            registry.register(cls)


def chrono_forge_records(caplog, level=logging.WARNING):
    return [r for r in caplog.records if r.name == "chrono_forge" and r.levelno >= level]


# -- registration --------------------------------------------------------------------------------
def test_a_module_level_subclass_registers_itself_under_its_job_class():
    assert registry.get(COUNTER) is w.Counter
    assert registry.resolve(COUNTER) is w.Counter
    assert registry.registered()[OnlyInTheTestProcess.job_class()] is OnlyInTheTestProcess


def test_a_class_defined_in_a_function_is_not_registered_and_cannot_be_used(chrono_forge_env):
    class Local(DurableWorkflow):
        def perform(self):
            pass

    assert not [cls for cls in registry.registered().values() if cls is Local]
    with pytest.raises(TypeError, match="defined inside a function"):
        Local.perform_later("k")
    assert Workflow.objects.count() == 0 and chrono_forge_env.pending == []


def test_a_redefined_class_replaces_the_old_one(unregistered):
    unregistered(OnlyInTheTestProcess)  # restored afterwards
    first = type("OnlyInTheTestProcess", (DurableWorkflow,), {"__module__": __name__})
    second = type("OnlyInTheTestProcess", (DurableWorkflow,), {"__module__": __name__})
    assert registry.get(OnlyInTheTestProcess.job_class()) is second is not first


@pytest.mark.parametrize("job_class", ["tests.workflows_core.Nope", "", 123, None, ["a.b"]])
def test_resolve_refuses_what_is_not_registered_naming_the_causes(job_class):
    assert registry.get(job_class) is None
    with pytest.raises(UnregisteredWorkflowClass) as raised:
        registry.resolve(job_class)
    message = str(raised.value)
    assert repr(job_class) in message
    assert "renamed or removed" in message and "older code" in message
    assert "restart the workers" in message and "WORKFLOW_MODULES" in message


def test_the_test_settings_register_every_workflow_module_of_the_suite():
    from pathlib import Path

    listed = settings.CHRONO_FORGE["WORKFLOW_MODULES"]
    on_disk = {f"tests.{path.stem}" for path in Path(__file__).parent.glob("workflows_*.py")}
    assert on_disk and on_disk <= set(listed)  # a qcluster subprocess registers them all
    for module in listed:
        assert module in sys.modules
        assert any(cls.__module__ == module for cls in registry.registered().values()), module


# -- autodiscovery and WORKFLOW_MODULES ------------------------------------------------------------
def forget(module: str) -> None:
    sys.modules.pop(module, None)
    for job_class in [jc for jc in registry.registered() if jc.startswith(module + ".")]:
        registry.unregister(job_class)


def test_the_workflows_module_of_every_installed_app_is_autodiscovered():
    forget("tests.registry_app.workflows")
    assert registry.get("tests.registry_app.workflows.Discovered") is None
    # Installing the app re-runs every AppConfig.ready(), chrono_forge's autodiscovery included.
    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "tests.registry_app"]):
        discovered = registry.get("tests.registry_app.workflows.Discovered")
    assert discovered is not None and discovered.__name__ == "Discovered"
    assert "tests.registry_app.extra" not in sys.modules  # only `workflows` modules are imported


def test_workflow_modules_are_imported_at_autodiscovery():
    forget("tests.registry_app.extra")
    with override_settings(CHRONO_FORGE={"WORKFLOW_MODULES": ["tests.registry_app.extra"]}):
        registry.autodiscover()
    assert registry.get("tests.registry_app.extra.Listed").__name__ == "Listed"


def test_a_broken_workflow_module_is_logged_and_left_to_the_check(caplog):
    modules = ["tests.registry_app.broken", "tests.registry_app.no_such_module"]
    with override_settings(CHRONO_FORGE={"WORKFLOW_MODULES": modules}):
        registry.autodiscover()  # does not raise: `manage.py check` must be able to say why
    errors = chrono_forge_records(caplog, logging.ERROR)
    assert len(errors) == 2
    assert "'tests.registry_app.broken' cannot be imported (RuntimeError: broken on purpose)" in (
        errors[0].getMessage()
    )
    assert "no_such_module" in errors[1].getMessage()


def check_ids(**chrono_forge) -> list[tuple[str, str]]:
    with override_settings(CHRONO_FORGE=chrono_forge):
        return [
            (m.id, m.msg)
            for m in run_checks(databases=[])
            if m.id and m.id.startswith("chrono_forge.") and "WORKFLOW_MODULES" in m.msg
        ]


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    "value", ["tests.workflows_core", [1], [""], {"tests.workflows_core": 1}, 5]
)
def test_e020_workflow_modules_must_be_a_list_of_module_paths(value):
    [(check_id, msg)] = check_ids(WORKFLOW_MODULES=value)
    assert check_id == "chrono_forge.E020" and "must be a list of module paths" in msg


@pytest.mark.django_db(databases="__all__")
def test_e020_every_workflow_module_must_import():
    [(check_id, msg)] = check_ids(
        WORKFLOW_MODULES=["tests.workflows_core", "tests.registry_app.broken", "tests.nowhere"]
    )
    assert check_id == "chrono_forge.E020"
    assert "'tests.registry_app.broken' cannot be imported (RuntimeError: broken on purpose)" in msg
    assert "'tests.nowhere' cannot be imported (ModuleNotFoundError" in msg
    assert "'tests.workflows_core'" not in msg and "not registered" in msg
    assert check_ids(WORKFLOW_MODULES=("tests.workflows_core",)) == []


# -- a workflow whose class is not registered ------------------------------------------------------
def test_a_row_whose_class_is_not_registered_is_stalled_and_retried_once_it_is_back(
    chrono_forge_env, unregistered, caplog
):
    env = chrono_forge_env
    wf = w.Counter.perform_later("k")
    unregistered(w.Counter)  # the worker runs older code
    env.run_all()
    wf.refresh_from_db()
    assert (wf.state, wf.locked_by, wf.next_run_at) == ("stalled", None, None)
    assert w.calls("Counter.perform") == 0
    [error] = ErrorLog.objects.filter(workflow=wf)
    assert error.error_class == "chrono_forge.exceptions.UnregisteredWorkflowClass"
    assert f"{COUNTER!r} is not a registered workflow class" in error.error_message
    assert "renamed or removed" in error.error_message
    assert "older code" in error.error_message and "restart the workers" in error.error_message
    # operator actions in a process without the class refuse with the same message
    with pytest.raises(UnregisteredWorkflowClass, match="older code"):
        wf.retry_later()
    assert env.pending == []

    registry.register(w.Counter)  # the workers were restarted on the new code
    wf.retry_later()
    env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and w.calls("Counter.count") == 1


def test_a_superseded_delivery_of_an_unregistered_class_exits_without_stalling(
    chrono_forge_env, unregistered
):
    wf = w.Counter.perform_later("k")
    chrono_forge_env.drop_pending()
    unregistered(w.Counter)
    tasks.run_workflow(COUNTER, "k", token="2026-01-01T00:00:00+00:00")  # not the row's due time
    wf.refresh_from_db()
    assert wf.state == "idle" and not ErrorLog.objects.exists()


def test_a_live_run_is_not_stalled_by_a_worker_without_the_class(chrono_forge_env, unregistered):
    from chrono_forge import clock

    wf = w.Counter.perform_later("k")
    chrono_forge_env.drop_pending()
    Workflow.objects.filter(pk=wf.pk).update(
        state="running", locked_by="live", locked_at=clock.now()
    )
    unregistered(w.Counter)
    tasks.run_workflow(COUNTER, "k")  # a duplicate delivery: the lock holder keeps it
    wf.refresh_from_db()
    assert (wf.state, wf.locked_by) == ("running", "live") and not ErrorLog.objects.exists()


def test_the_sweeps_enqueue_a_row_whose_class_is_gone_and_the_worker_stalls_it(
    chrono_forge_env, unregistered
):
    from datetime import timedelta

    from chrono_forge import clock

    env = chrono_forge_env
    overdue = w.Counter.perform_later("overdue")
    stranded = w.Counter.perform_later("stranded")
    env.drop_pending()
    long_ago = clock.now() - timedelta(days=1)
    Workflow.objects.filter(pk=overdue.pk).update(next_run_at=long_ago)
    Workflow.objects.filter(pk=stranded.pk).update(
        state="running", locked_by="dead", locked_at=long_ago
    )
    unregistered(w.Counter)
    assert Workflow.objects.resume_overdue() == 1
    assert Workflow.objects.reap_stalled() == 1
    env.run_all()
    assert sorted(Workflow.objects.values_list("key", "state")) == [
        ("overdue", "stalled"),
        ("stranded", "stalled"),
    ]
    assert ErrorLog.objects.filter(error_class__endswith="UnregisteredWorkflowClass").count() == 2


def test_run_workflow_never_imports_the_module_a_payload_or_row_names(chrono_forge_env, caplog):
    assert "tests.tripwire" not in sys.modules
    Workflow.objects.create(job_class="tests.tripwire.Tripwire", key="k")
    tasks.run_workflow("tests.tripwire.Tripwire", "k")
    tasks.run_workflow("tests.tripwire.Tripwire", "nobody")
    tasks.run_workflow("tests.tripwire", "k")
    row = Workflow.objects.get(key="k")
    assert row.state == "stalled"
    with pytest.raises(UnregisteredWorkflowClass):
        row.workflow_class()
    with pytest.raises(UnregisteredWorkflowClass):
        row.retry_later()
    assert "tests.tripwire" not in sys.modules
    assert "CHRONO_FORGE_TRIPWIRE_IMPORTED" not in os.environ
    [error] = ErrorLog.objects.all()
    assert "'tests.tripwire.Tripwire' is not a registered workflow class" in error.error_message
    missing = [r.getMessage() for r in chrono_forge_records(caplog, logging.ERROR)]
    assert len(missing) == 2 and all("does not exist" in m for m in missing), missing


@pytest.mark.django_db(transaction=True)
def test_a_real_qcluster_stalls_a_workflow_whose_class_it_does_not_have(qcluster):
    """The test process registered OnlyInTheTestProcess; the qcluster imports only WORKFLOW_MODULES
    (this module is not one), as a worker started before the class was deployed."""
    cluster = qcluster()
    wf = OnlyInTheTestProcess.perform_later("stale-worker")
    done = w.OneStep.perform_later("fresh")

    def finished():
        wf.refresh_from_db()
        done.refresh_from_db()
        # running is not finished: the worker may be recording the stall right now
        return wf.state not in ("idle", "running") and done.state == "completed"

    wait_for(finished, timeout=30, message="both workflows to finish")
    assert wf.state == "stalled", cluster.log_tail()
    [error] = ErrorLog.objects.filter(workflow=wf)
    assert f"{OnlyInTheTestProcess.job_class()!r} is not a registered workflow class" in (
        error.error_message
    )
    assert "restart the workers" in error.error_message
    assert not wf.execution_logs.exists()
    assert "Traceback" not in cluster.log_text()
