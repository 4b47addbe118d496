"""The Django Tasks dispatcher: passes, continuations and chrono_forge's background calls as
``django.tasks`` tasks (the django-tasks backport on Django 5.2), on django-tasks-db's database
backend; end to end under its real ``db_worker`` process."""

from __future__ import annotations

import importlib.util
import time
from datetime import datetime, timedelta

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django_tasks_db.models import DBTaskResult

from chrono_forge import clock, dispatch
from chrono_forge.dispatch.django_tasks import DjangoTasksDispatcher
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_engines as we
from tests import workflows_ops as wo
from tests.helpers import wait_for

#: django.tasks on Django >= 6.0, the backport's package on 5.2.
TASKS_PACKAGE = "django.tasks" if importlib.util.find_spec("django.tasks") else "django_tasks"
DUMMY = {"BACKEND": f"{TASKS_PACKAGE}.backends.dummy.DummyBackend"}
IMMEDIATE = {"BACKEND": f"{TASKS_PACKAGE}.backends.immediate.ImmediateBackend"}
DATABASE = {"BACKEND": "django_tasks_db.DatabaseBackend"}
RUN_PASS = "chrono_forge.dispatch.django_tasks.run_pass"
CALL = "chrono_forge.dispatch.django_tasks.call"


def e040(**chrono_forge):
    settings = {
        "DISPATCHER": "chrono_forge.dispatch.django_tasks.DjangoTasksDispatcher",
        **chrono_forge,
    }
    with override_settings(CHRONO_FORGE=settings):
        return [m for m in run_checks(databases=[]) if m.id == "chrono_forge.E040"]


# -- enqueueing -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_pass_is_a_task_row_and_a_wait_a_deferred_one(django_tasks_dispatcher, runs_table):
    assert isinstance(django_tasks_dispatcher, DjangoTasksDispatcher)
    assert django_tasks_dispatcher.transactional()
    we.Pipeline.perform_later("p", pause=60)
    [task] = DBTaskResult.objects.all()
    assert (task.task_path, task.backend_name, task.queue_name) == (RUN_PASS, "default", "default")
    first_due = Workflow.objects.get(key="p").next_run_at  # every delivery has a due time
    assert task.args_kwargs == {
        "args": [we.Pipeline.job_class(), "p"],
        "kwargs": {"token": first_due.isoformat()},
    }
    assert task.status == "READY"

    # Run it as the worker would: the pass runs fetch and halts on the wait.
    task.task.call(*task.task_result.args, **task.task_result.kwargs)
    wf = Workflow.objects.get(key="p")
    assert wf.state == "idle"
    [continuation] = DBTaskResult.objects.exclude(pk=task.pk)
    assert continuation.run_after == wf.next_run_at > clock.now() + timedelta(seconds=59)
    assert continuation.args_kwargs["kwargs"] == {"token": wf.next_run_at.isoformat()}
    assert [step for _, step, _, _ in we.runs()] == ["fetch"]


@pytest.mark.django_db(transaction=True)
def test_with_the_database_backend_the_enqueue_is_part_of_the_callers_transaction(
    django_tasks_dispatcher,
):
    with pytest.raises(RuntimeError), transaction.atomic():
        wo.OneStep.perform_later("rolled-back")
        assert DBTaskResult.objects.count() == 1  # written inside the transaction...
        raise RuntimeError("rollback")
    assert not DBTaskResult.objects.exists()  # ... and rolled back with it
    assert not Workflow.objects.filter(key="rolled-back").exists()

    with transaction.atomic():
        wo.OneStep.perform_later("committed")
    assert DBTaskResult.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_another_backend_enqueues_on_commit(django_tasks_dispatcher, settings):
    from chrono_forge.dispatch.django_tasks import task_backends

    settings.TASKS = {"default": DUMMY}
    backend = task_backends["default"]
    assert not django_tasks_dispatcher.transactional()
    with transaction.atomic():
        wo.OneStep.perform_later("later")
        assert backend.results == []  # nothing leaves before the commit
    [result] = backend.results
    assert (result.task.module_path, result.args) == (RUN_PASS, [wo.OneStep.job_class(), "later"])

    with pytest.raises(RuntimeError), transaction.atomic():
        wo.OneStep.perform_later("never")
        raise RuntimeError("rollback")
    assert len(backend.results) == 1


@pytest.mark.django_db(transaction=True)
def test_background_calls_are_call_tasks_that_the_worker_runs(django_tasks_dispatcher, tmp_path):
    due = clock.now() + timedelta(seconds=30)
    dispatch.enqueue_call("chrono_forge.maintenance.reap", run_at=due, stale_after_minutes=5)
    [later] = DBTaskResult.objects.all()
    assert later.task_path == CALL and later.run_after == due
    assert later.args_kwargs == {
        "args": ["chrono_forge.maintenance.reap", [], {"stale_after_minutes": 5}],
        "kwargs": {},
    }
    target = tmp_path / "called"
    dispatch.enqueue_call("tests.e2e_tasks.touch", str(target), content="via django.tasks")

    call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0", verbosity=0)
    assert target.read_text() == "via django.tasks"
    assert DBTaskResult.objects.get(pk=later.pk).status == "READY"  # not due yet


@pytest.mark.django_db(transaction=True)
def test_bulk_enqueues_go_to_the_configured_queue(django_tasks_dispatcher, settings):
    settings.CHRONO_FORGE = {**settings.CHRONO_FORGE, "CLUSTER": "passes"}
    settings.TASKS = {"default": {**DATABASE, "QUEUES": ["default", "passes"]}}
    dispatch.enqueue_many([("a.B", "k1"), ("a.B", "k2")])
    dispatch.enqueue("a.B", "k3")
    rows = DBTaskResult.objects.order_by("enqueued_at", "args_kwargs")
    assert sorted((t.queue_name, t.task_path, t.args_kwargs["args"][1]) for t in rows) == [
        ("passes", RUN_PASS, "k1"),
        ("passes", RUN_PASS, "k2"),
        ("passes", RUN_PASS, "k3"),
    ]


@pytest.mark.django_db(transaction=True)
def test_the_in_process_worker_runs_a_workflow_to_completion(django_tasks_dispatcher, runs_table):
    we.Pipeline.perform_later("inline")
    call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0", verbosity=0)
    assert Workflow.objects.get(key="inline").state == "completed"
    assert [step for _, step, _, _ in we.runs()] == ["fetch", "transform", "store"]
    assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}


# -- the system check -------------------------------------------------------------------------


def test_the_check_accepts_a_backend_that_defers_and_refuses_one_that_cannot(settings):
    settings.TASKS = {"default": DATABASE, "dummy": DUMMY, "now": IMMEDIATE}
    assert e040() == []
    assert e040(TASKS_BACKEND="dummy") == []
    [refused] = e040(TASKS_BACKEND="now")
    assert "cannot defer" in refused.msg and "ImmediateBackend" in refused.msg
    [missing] = e040(TASKS_BACKEND="nope")
    assert "'nope' is not a usable TASKS backend" in missing.msg
    [bad] = e040(TASKS_BACKEND=3)
    assert "must be an alias of the TASKS setting" in bad.msg
    # The django-q2 default never looks at TASKS.
    with override_settings(CHRONO_FORGE={"TASKS_BACKEND": "now"}):
        assert [m for m in run_checks(databases=[]) if m.id == "chrono_forge.E040"] == []


def test_a_backend_that_cannot_defer_refuses_a_delayed_continuation(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.TASKS = {"default": IMMEDIATE}
    with pytest.raises(ImproperlyConfigured, match="cannot defer"):
        DjangoTasksDispatcher().enqueue("a.B", "k", run_at=clock.now() + timedelta(seconds=5))


# -- end to end under db_worker ---------------------------------------------------------------


def _finished(*keys):
    def check():
        states = dict(Workflow.objects.filter(key__in=keys).values_list("key", "state"))
        bad = {k: s for k, s in states.items() if s in ("failed", "stalled")}
        if bad:
            raise AssertionError(f"workflows ended badly: {bad}")
        return len(states) == len(keys) and set(states.values()) == {"completed"}

    return check


#: db_worker's poll interval when idle (its default is 1 s; docs/operations.md has both figures).
worker_interval = 0.1


def test_workflows_run_to_completion_under_a_real_db_worker(
    db_worker, django_tasks_dispatcher, runs_table
):
    db_worker(interval=worker_interval)
    pauses = {"wait-1": 1.0, "wait-2": 1.4, "wait-3": 1.8}
    we.Pipeline.perform_later("steps")
    for key, pause in pauses.items():
        we.Pipeline.perform_later(key, pause=pause)
    we.FanOut.perform_later("fan", n=3)
    keys = ("steps", *pauses, "fan")
    wait_for(_finished(*keys), timeout=40, interval=0.2, message="the workflows")

    per_key: dict[str, list[str]] = {}
    for key, step, _, _ in we.runs():
        per_key.setdefault(key, []).append(step)
    for key in ("steps", *pauses):
        assert per_key.pop(key) == ["fetch", "transform", "store"], key
    assert per_key.pop("fan") == ["finish"]
    assert sorted(per_key) == [f"fan$leaves$item_{i}" for i in range(3)]
    assert all(steps == ["work"] for steps in per_key.values())

    late = {}
    for key in pauses:
        wait = ExecutionLog.objects.get(workflow__key=key, step_name="wait$pause")
        late[key] = wait.completed_at - datetime.fromisoformat(wait.metadata["wait_until"])
        assert timedelta(0) <= late[key] < timedelta(seconds=2), (key, late[key])
    shown = ", ".join(f"{delta.total_seconds():.3f}" for delta in late.values())
    print(f"\ndb_worker (--interval {worker_interval}): waits ran late by (s) {shown}")
    # Every pass and merge poll was a django.tasks task the worker ran successfully.
    tasks = DBTaskResult.objects.all()
    assert {t.task_path for t in tasks} == {RUN_PASS, CALL}
    assert set(tasks.values_list("status", flat=True)) <= {"SUCCESSFUL", "READY"}


def test_a_task_whose_worker_died_is_never_redelivered_and_resume_overdue_recovers_it(
    db_worker, django_tasks_dispatcher, runs_table
):
    we.Pipeline.perform_later("orphan")
    [task] = DBTaskResult.objects.all()
    # A db_worker claims the row (RUNNING) and dies before running it: no worker takes it again.
    task.claim("a-worker-that-died")
    db_worker()
    wf = Workflow.objects.get(key="orphan")
    wait_for(lambda: clock.now() > wf.next_run_at, timeout=5, message="the due time")
    time.sleep(1)  # a polling worker, an overdue workflow: nothing comes
    wf.refresh_from_db()
    assert wf.state == "idle" and we.runs() == []
    assert DBTaskResult.objects.get(pk=task.pk).status == "RUNNING"

    assert Workflow.objects.resume_overdue(timedelta(0)) == 1
    wait_for(_finished("orphan"), timeout=20, message="the recovered workflow")
    assert [step for _, step, _, _ in we.runs()] == ["fetch", "transform", "store"]
