"""The lock, continuations and their tokens, the row's retry API.

The Ruby gem's Solid Queue concurrency hooks have no counterpart here; the Python analog is the
``select_for_update`` lock plus ``ConcurrentExecutionError``: a duplicate delivery exits quietly
through ``chrono_forge.tasks.run_workflow`` (tested below; the real race is in
test_core_concurrency.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings

from chrono_forge import clock, conf, tasks
from chrono_forge.context import Context
from chrono_forge.exceptions import (
    ConcurrentExecutionError,
    LongRunningConcurrentExecutionError,
    WorkflowNotRetryableError,
)
from chrono_forge.executor import Delivery, token_for
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_core as w
from tests.core_sql import WORKFLOW, SqlLog

pytestmark = pytest.mark.django_db


def make_row(key="k", cls=w.Counter, **fields) -> Workflow:
    now = clock.now()
    return Workflow.objects.create(
        job_class=cls.job_class(), key=key, created=now, modified=now, **fields
    )


# -- lock ------------------------------------------------------------------------------------------
def test_acquire_stamps_started_at_and_locked_by(chrono_forge_env):
    row = make_row()
    run = Delivery(w.Counter, "k").acquire()
    assert run is not None
    row.refresh_from_db()
    assert row.locked_by == run.run_id and row.state == "running"
    assert row.started_at == chrono_forge_env.now and row.locked_at == chrono_forge_env.now


def test_acquire_builds_the_pass_with_the_locked_row_its_context_and_its_step_view(
    chrono_forge_env,
):
    make_row(context={"n": 1})
    with SqlLog() as sql:
        run = Delivery(w.Counter, "k").acquire()
        assert run is not None
        assert (run.row.state, run.row.locked_by) == ("running", run.run_id)
        assert run.context["n"] == 1 and not run.context.dirty
        assert run.steps.get("durably_execute$count") is None  # a first pass: no step log to read
    assert sql.count("SELECT") == 1, sql.dump()  # the lock's: the step view was known empty


def test_a_delivery_with_nothing_to_run_builds_no_pass(chrono_forge_env):
    make_row(state="completed")
    assert Delivery(w.Counter, "k").acquire() is None
    assert Delivery(w.Counter, "nobody").acquire() is None


def test_acquire_preserves_an_existing_started_at(chrono_forge_env):
    earlier = chrono_forge_env.now - timedelta(hours=1)
    row = make_row(started_at=earlier)
    Delivery(w.Counter, "k").acquire()
    row.refresh_from_db()
    assert row.started_at == earlier


def test_acquire_is_exactly_one_update_setting_started_at_and_locked_by(chrono_forge_env):
    make_row()
    with SqlLog() as sql:
        Delivery(w.Counter, "k").acquire()
    [update] = sql.of("UPDATE", WORKFLOW)
    assert '"started_at"' in update.sql and '"locked_by"' in update.sql and '"state"' in update.sql
    assert sql.count("UPDATE") == 1 and sql.count("INSERT") == 0


def test_a_fresh_foreign_lock_raises_concurrent_execution_error(chrono_forge_env):
    make_row(
        key="order-123",
        locked_by="holder-run",
        locked_at=clock.now() - timedelta(minutes=1),
        state="running",
    )
    run = Delivery(w.Counter, "order-123")
    with pytest.raises(ConcurrentExecutionError) as excinfo:
        run.acquire()
    message = str(excinfo.value)
    assert "order-123" in message and run.run_id in message and "holder-run" in message
    assert "select_for_update" in message and "Class" not in message
    assert not isinstance(excinfo.value, LongRunningConcurrentExecutionError)


def test_release_by_the_owner_clears_the_lock(chrono_forge_env):
    row = make_row()
    run = Delivery(w.Counter, "k").acquire()
    assert run is not None
    run.release("idle")
    row.refresh_from_db()
    assert (row.locked_by, row.locked_at, row.state) == (None, None, "idle")


def test_release_after_losing_the_lock_raises(chrono_forge_env):
    row = make_row()
    run = Delivery(w.Counter, "k").acquire()
    assert run is not None
    Workflow.objects.filter(pk=row.pk).update(locked_by="thief")
    with pytest.raises(LongRunningConcurrentExecutionError, match="thief"):
        run.release("idle")
    row.refresh_from_db()
    assert row.locked_by == "thief"  # the new owner keeps it


def test_force_unlock_ignores_ownership(chrono_forge_env):
    row = make_row(locked_by="someone", locked_at=clock.now(), state="running")
    row.force_unlock()
    row.refresh_from_db()
    assert (row.locked_by, row.locked_at, row.state) == (None, None, "idle")


def test_release_reads_no_row_and_updates_only_where_it_still_owns_the_lock(chrono_forge_env):
    make_row()
    run = Delivery(w.Counter, "k").acquire()
    assert run is not None
    run.context["dirty"] = True
    with SqlLog() as sql:
        run.release("idle")
    assert sql.count("SELECT") == 0, sql.dump()
    [update] = sql.data_statements
    assert update.kind == "UPDATE" and update.table == WORKFLOW
    assert '"locked_by" =' in update.sql.split("WHERE", 1)[1]  # conditional on ownership
    assert '"kwargs"' not in update.sql


def test_a_stale_lock_is_stolen(chrono_forge_env):
    row = make_row(
        locked_by="dead-run",
        state="running",
        locked_at=clock.now() - conf.max_duration() - timedelta(seconds=1),
    )
    run = Delivery(w.Counter, "k").acquire()
    assert run is not None
    row.refresh_from_db()
    assert row.locked_by == run.run_id


def test_max_duration_is_read_at_run_time(chrono_forge_env):
    make_row(locked_by="slow-run", state="running", locked_at=clock.now() - timedelta(minutes=3))
    with pytest.raises(ConcurrentExecutionError):
        Delivery(w.Counter, "k").acquire()
    with override_settings(CHRONO_FORGE={"MAX_DURATION": timedelta(minutes=2)}):
        assert Delivery(w.Counter, "k").acquire() is not None


@pytest.mark.parametrize("state", ["completed", "failed", "stalled"])
def test_a_finished_row_is_not_run(chrono_forge_env, state):
    make_row(state=state)
    assert Delivery(w.Counter, "k").execute() is None
    assert w.calls("Counter.perform") == 0


def test_a_missing_row_is_not_run(chrono_forge_env):
    assert tasks.run_workflow(w.Counter.job_class(), "nobody") is None
    assert Workflow.objects.count() == 0


# -- duplicate deliveries through the django-q2 task -----------------------------------------------
def test_a_duplicate_delivery_exits_quietly_through_the_task(chrono_forge_env, caplog):
    row = make_row(locked_by="live-run", locked_at=clock.now(), state="running")
    caplog.set_level("INFO", logger="chrono_forge")
    # no exception for django-q2 to record
    assert tasks.run_workflow(w.Counter.job_class(), "k") is None
    row.refresh_from_db()
    assert row.locked_by == "live-run" and w.calls("Counter.perform") == 0
    assert "locked by run live-run" in caplog.text
    assert chrono_forge_env.pending == []


def test_a_run_that_lost_its_lock_is_reported_by_the_task(chrono_forge_env, monkeypatch):
    make_row()
    original = w.Counter.count

    def count(self):
        Workflow.objects.filter(key="k").update(locked_by="thief")
        return original(self)

    monkeypatch.setattr(w.Counter, "count", count)
    with pytest.raises(LongRunningConcurrentExecutionError, match="lost its lock to thief"):
        tasks.run_workflow(w.Counter.job_class(), "k")
    row = Workflow.objects.get(key="k")
    assert (row.locked_by, row.state) == ("thief", "running")  # untouched: the thief owns it
    assert not row.execution_logs.filter(step_name="$workflow_completion$").exists()  # rolled back
    assert chrono_forge_env.pending == []


# -- continuation publication ordering -------------------------------------------------------------
@pytest.fixture
def lock_at_enqueue(chrono_forge_env, monkeypatch):
    """Records, for every enqueue, the workflow's locked_by as the database shows it at that
    moment."""
    seen = []
    original = chrono_forge_env.dispatcher.enqueue

    def enqueue(job_class, key, *, run_at=None, **internal):
        holder = (
            Workflow.objects.filter(job_class=job_class, key=key)
            .values_list("locked_by", flat=True)
            .first()
        )
        seen.append((key, run_at, holder))
        return original(job_class, key, run_at=run_at, **internal)

    monkeypatch.setattr(chrono_forge_env.dispatcher, "enqueue", enqueue)
    return seen


def test_every_continuation_is_published_after_the_lock_is_released(
    chrono_forge_env, lock_at_enqueue
):
    w.ReplayProbe.perform_later("order")
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="order").state == "completed"
    scheduled = [entry for entry in lock_at_enqueue if entry[1] is not None]
    assert len(scheduled) == 2  # two retry backoffs
    assert all(holder is None for _, _, holder in lock_at_enqueue), lock_at_enqueue


def test_a_continuation_keeps_its_internal_kwargs_and_targets_the_key(chrono_forge_env):
    w.ContinueWithKwargs.perform_later("cont")
    chrono_forge_env.run_due()
    [run] = chrono_forge_env.pending
    assert (run.job_class, run.key) == (w.ContinueWithKwargs.job_class(), "cont")
    assert run.internal["wait_condition"] == "my_cond"
    assert run.run_at == chrono_forge_env.now + timedelta(seconds=5)
    assert run.internal["token"] == token_for(run.run_at)
    assert Workflow.objects.get(key="cont").next_run_at == run.run_at
    chrono_forge_env.run_all()
    # the primitive sees it on the next pass
    assert w.FLAGS["internal"][1]["wait_condition"] == "my_cond"
    row = Workflow.objects.get(key="cont")
    assert row.state == "completed" and row.next_run_at is None


def test_nothing_recorded_means_nothing_published(chrono_forge_env):
    w.ParkForever.perform_later("park")
    assert chrono_forge_env.run_due() == 1
    assert chrono_forge_env.pending == []
    row = Workflow.objects.get(key="park")
    assert (row.state, row.next_run_at, row.locked_by) == ("idle", None, None)


def test_a_failing_context_save_still_releases_and_publishes(chrono_forge_env, monkeypatch):
    def to_dict(self):
        raise RuntimeError("context save failed")

    monkeypatch.setattr(Context, "to_dict", to_dict)
    w.ContinueWithKwargs.perform_later("savefail")
    with pytest.raises(RuntimeError, match="context save failed"):
        chrono_forge_env.run_due()
    row = Workflow.objects.get(key="savefail")
    assert (row.state, row.locked_by, row.locked_at) == ("idle", None, None)
    assert row.context == {}  # the unsaved change is lost, the rest of the release is not
    [run] = chrono_forge_env.pending
    assert run.internal["wait_condition"] == "my_cond" and row.next_run_at == run.run_at


@pytest.mark.parametrize(
    "workflow,kwargs",
    [(w.Steps, {"n": 1, "context_write": True}), (w.FailsWithContext, {})],
    ids=["completion", "failure"],
)
def test_a_failing_context_save_at_the_end_never_leaves_the_row_locked(
    chrono_forge_env, monkeypatch, workflow, kwargs
):
    """The marker and the final release commit together; when saving the context fails there, the
    rollback must not take the lock release with it."""

    def to_dict(self):
        raise RuntimeError("context save failed")

    monkeypatch.setattr(Context, "to_dict", to_dict)
    wf = workflow.perform_later("end", **kwargs)
    with pytest.raises(RuntimeError, match="context save failed"):
        chrono_forge_env.run_due()
    wf.refresh_from_db()
    assert (wf.locked_by, wf.locked_at) == (None, None)
    assert wf.state == "idle"  # not completed/failed without its context: an operator can resume it
    assert not wf.execution_logs.filter(step_name__startswith="$workflow_").exists()
    if workflow is w.Steps:  # the finished step's completion, rolled back with the marker, is
        # carried by the release again: a resume replays the step instead of running it again
        step = wf.execution_logs.get(step_name="durably_execute$step_0")
        assert (step.state, step.attempts) == ("completed", 1)


# -- tokens: at most one pending continuation per workflow -----------------------------------------
def live(env) -> list:
    """Pending runs that would actually run a pass: untokened, or carrying the row's current
    token."""
    rows = {(r.job_class, r.key): r.next_run_at for r in Workflow.objects.all()}
    result = []
    for run in env.pending:
        token = run.internal.get("token")
        due = rows.get((run.job_class, run.key))
        if token is None or (due is not None and token == token_for(due)):
            result.append(run)
    return result


def test_a_superseded_delivery_exits_quietly(chrono_forge_env):
    w.FlakyOnce.perform_later("tok")
    chrono_forge_env.run_due()
    [run] = chrono_forge_env.pending
    stale = token_for(run.run_at - timedelta(seconds=30))
    assert tasks.run_workflow(run.job_class, run.key, token=stale) is None
    assert w.calls("FlakyOnce.flaky") == 1
    assert Workflow.objects.get(key="tok").next_run_at == run.run_at  # untouched


def test_a_duplicate_delivery_of_the_same_continuation_runs_once(chrono_forge_env):
    w.FlakyOnce.perform_later("twice")
    chrono_forge_env.run_due()
    [run] = chrono_forge_env.pending
    chrono_forge_env.drop_pending()
    chrono_forge_env.travel_to(run.run_at)
    tasks.run_workflow(run.job_class, run.key, **run.internal)
    tasks.run_workflow(run.job_class, run.key, **run.internal)  # redelivered by the broker
    assert w.calls("FlakyOnce.flaky") == 2
    row = Workflow.objects.get(key="twice")
    assert (
        row.state == "completed"
        and row.execution_logs.get(step_name="durably_execute$flaky").attempts == 2
    )


def test_external_wake_ups_never_multiply_continuations(chrono_forge_env):
    """FlakyOnce-style step failing twice with 10 s, 20 s backoffs; three external perform_later
    calls while the first continuation is pending. Every pass that runs leaves at most one live
    continuation, and superseded ones never run perform()."""
    wf = w.ReplayProbe.perform_later("wake")
    chrono_forge_env.run_due()  # pass 1: second() fails once -> continuation at +10 s
    assert len(live(chrono_forge_env)) == 1
    for _ in range(3):
        w.ReplayProbe.perform_later("wake")  # untokened: each runs a pass
    assert chrono_forge_env.run_due() == 3
    # wake 1: second() fails again (continuation at +20 s, superseding +10 s); wake 2: second()
    # succeeds and the workflow completes; wake 3 finds it completed and runs nothing.
    row = Workflow.objects.get(pk=wf.pk)
    assert row.state == "completed" and row.next_run_at is None
    assert w.calls("ReplayProbe.perform") == 3 and w.calls("ReplayProbe.second") == 3
    assert live(chrono_forge_env) == []
    superseded = chrono_forge_env.pending
    assert len(superseded) == 2  # the +10 s and +20 s tokens, both stale now
    assert chrono_forge_env.run_all() == 2
    assert w.calls("ReplayProbe.perform") == 3  # they exited without running perform()
    assert Workflow.objects.filter(key="wake").count() == 1


def test_a_wake_up_while_a_continuation_is_pending_supersedes_it(chrono_forge_env):
    w.Steps.perform_later("gate", gate=True)
    chrono_forge_env.run_due()  # gate closed: retry in 60 s
    [first] = chrono_forge_env.pending
    chrono_forge_env.advance(10)
    w.Steps.perform_later("gate", gate=True)  # an external wake-up
    chrono_forge_env.run_due()  # gate still closed: a new continuation replaces the first
    assert len(chrono_forge_env.pending) == 2 and len(live(chrono_forge_env)) == 1
    assert live(chrono_forge_env)[0].run_at > first.run_at
    w.FLAGS["gate_open"] = True
    chrono_forge_env.run_all()
    assert w.calls("Steps.gate") == 3  # the superseded continuation did not run a pass
    assert Workflow.objects.get(key="gate").state == "completed"


def test_a_wake_up_that_races_a_running_pass_is_published_at_release(chrono_forge_env, monkeypatch):
    """perform_later delivered while another pass holds the lock flags the row; the holder, parking
    with nothing scheduled, publishes one immediate continuation instead of losing the wake-up.
    (The holder is a later pass: a first pass writes its lock with its first write, see below.)"""
    original = w.ParkForever.perform

    def perform(self):
        if w.calls("ParkForever.perform") == 0:
            assert tasks.run_workflow(self.workflow.job_class, self.key) is None  # locked: flagged
            assert Workflow.objects.get(pk=self.workflow.pk).wake_requested is True
        original(self)

    monkeypatch.setattr(w.ParkForever, "perform", perform)
    wf = w.ParkForever.perform_later("race")
    Workflow.objects.filter(pk=wf.pk).update(started_at=chrono_forge_env.now)  # not a first pass
    assert chrono_forge_env.run_due() == 2  # the pass, then the wake-up it published at release
    assert w.calls("ParkForever.perform") == 2
    wf.refresh_from_db()
    assert (wf.state, wf.wake_requested, wf.next_run_at) == ("idle", False, None)
    assert chrono_forge_env.pending == []


def test_a_wake_up_before_a_first_pass_writes_its_lock_runs_the_workflow_itself(
    chrono_forge_env, monkeypatch
):
    """A first pass writes its lock with its first write (the step INSERT). A wake-up delivered
    before that finds the row unlocked and runs the workflow; the first pass then finds the run
    taken and exits without writing anything: the step runs once, nothing is lost."""
    original = w.OneStep.perform
    raced: list[bool] = []

    def perform(self):
        if not raced:
            raced.append(True)
            tasks.run_workflow(self.workflow.job_class, self.key)  # the whole run, to completion
            assert Workflow.objects.get(pk=self.workflow.pk).state == "completed"
        original(self)

    monkeypatch.setattr(w.OneStep, "perform", perform)
    wf = w.OneStep.perform_later("race-first")
    assert chrono_forge_env.run_due() == 1  # the first pass; it exits at its step's INSERT
    wf.refresh_from_db()
    assert (wf.state, wf.locked_by, wf.next_run_at) == ("completed", None, None)
    assert w.calls("OneStep.work") == 1
    [log] = wf.execution_logs.filter(step_name="durably_execute$work")
    assert (log.state, log.attempts) == ("completed", 1)
    assert chrono_forge_env.pending == []


@pytest.mark.parametrize("how", ["cancelled", "taken"])
def test_a_first_pass_that_loses_its_lock_exits_before_any_write(chrono_forge_env, how):
    """Between a first pass's read and its first write, the run was cancelled or another pass
    took it: the write raises ``LockClaimLost`` (a ConcurrentExecutionError, which the task
    swallows), no step is stored, no error is recorded and the row is left as the other writer
    left it."""
    from chrono_forge.executor import LockClaimLost

    wf = w.OneStep.perform_later("lost")
    [delivery] = chrono_forge_env.pending
    run = Delivery(w.OneStep, "lost", token=delivery.kwargs["token"]).acquire()
    assert run is not None
    assert Workflow.objects.get(pk=wf.pk).locked_by is None  # nothing written yet
    if how == "cancelled":
        Workflow.objects.filter(pk=wf.pk).cancel("stop")
    else:
        Workflow.objects.filter(pk=wf.pk).update(
            locked_by="other", locked_at=chrono_forge_env.now, state="running"
        )
    before = Workflow.objects.values().get(pk=wf.pk)
    with pytest.raises(LockClaimLost, match="another delivery started the run first"):
        run.run(w.OneStep._bind(run.row, run))
    run.finish()
    assert w.calls("OneStep.work") == 0
    assert not wf.execution_logs.exists() and not ErrorLog.objects.filter(workflow=wf).exists()
    assert Workflow.objects.values().get(pk=wf.pk) == before
    with pytest.raises(LockClaimLost):  # every later write of that pass raises the same
        run.steps.take_claim()


def test_a_racing_wake_up_keeps_the_workflow_retry_budget(chrono_forge_env):
    """The wake-up published at release replaces the scheduled retry but keeps its arguments
    (attempt, retry_counts), so racing wake-ups run the retry sooner without resetting its
    budget."""
    chrono_forge_env.max_runs = 20  # a reset budget would loop forever
    wf = w.WokenFailure.perform_later("woken")
    # Every pass holds its lock when the wake-up comes: not a first pass, whose lock is written
    # with its first write (a wake-up before it runs the workflow itself).
    Workflow.objects.filter(pk=wf.pk).update(started_at=chrono_forge_env.now)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "failed"
    # one error per attempt, none repeated (a reset budget would record attempt 0 again)
    assert sorted(ErrorLog.objects.filter(workflow=wf).values_list("attempt", flat=True)) == [
        0,
        1,
        2,
    ]
    assert w.calls("WokenFailure.perform") == 3


# -- retry API on the row --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "state,retryable",
    [
        ("failed", True),
        ("stalled", True),
        ("completed", False),
        ("running", False),
        ("idle", False),
    ],
)
def test_retryable(state, retryable):
    assert Workflow(state=state).retryable is retryable


def test_row_retry_later_on_a_completed_workflow_raises_and_enqueues_nothing(chrono_forge_env):
    row = make_row(state="completed")
    with pytest.raises(WorkflowNotRetryableError, match="completed"):
        row.retry_later()
    assert chrono_forge_env.pending == []


def test_row_retry_now_on_a_running_workflow_raises(chrono_forge_env):
    row = make_row(state="running", locked_by="x", locked_at=clock.now())
    with pytest.raises(WorkflowNotRetryableError):
        row.retry_now()
    row.refresh_from_db()
    assert row.locked_by == "x" and row.execution_logs.count() == 0


def test_row_retry_of_a_fixed_failed_workflow_completes(chrono_forge_env):
    wf = w.FixableFailure.perform_later("fixable")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "failed" and ErrorLog.objects.filter(workflow=wf).count() == 2
    Workflow.objects.filter(pk=wf.pk).update(context={"fixed": True})
    wf.refresh_from_db()
    wf.retry_now()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context == {"fixed": True, "done": True}
    assert (
        wf.execution_logs.filter(
            step_name__startswith="$workflow_retry$", state="completed"
        ).count()
        == 1
    )
