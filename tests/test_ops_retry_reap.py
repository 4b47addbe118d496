"""stalled, failed, retry, resume, reap, and the lost-continuation sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from chrono_forge import conf
from chrono_forge.exceptions import (
    ConcurrentExecutionError,
    NotExecutableError,
    WorkflowNotRetryableError,
)
from chrono_forge.executor import token_for
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.tasks import run_workflow
from tests import workflows_ops as w
from tests.core_sql import capture

pytestmark = pytest.mark.django_db

MIN = timedelta(minutes=1)
ONE_STEP = "tests.workflows_ops.OneStep"


@pytest.fixture(autouse=True)
def reset():
    w.StallsUntilFixed.FIXED = False


def stranded_row(env, key="k", *, lock_age=40 * MIN, state="running", job_class=ONE_STEP, **fields):
    locked_at = env.now - lock_age if lock_age is not None else None
    return Workflow.objects.create(
        job_class=job_class,
        key=key,
        state=state,
        locked_by="dead-run",
        locked_at=locked_at,
        started_at=locked_at,
        **fields,
    )


def pending_keys(env):
    return [(run.job_class, run.key) for run in env.pending]


# -- retryable, retry_now / retry_later ------------------------------------------------------------
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
    assert Workflow(job_class=ONE_STEP, key="k", state=state).retryable is retryable
    Workflow.objects.create(job_class=ONE_STEP, key="k", state=state)
    assert list(Workflow.objects.retryable().values_list("state", flat=True)) == (
        [state] if retryable else []
    )


def test_retry_later_on_completed_raises_and_enqueues_nothing(chrono_forge_env):
    wf = Workflow.objects.create(job_class=ONE_STEP, key="k", state="completed")
    with pytest.raises(WorkflowNotRetryableError, match="completed"):
        wf.retry_later()
    assert chrono_forge_env.pending == []


def test_retry_now_on_running_raises(chrono_forge_env):
    wf = stranded_row(chrono_forge_env)
    with pytest.raises(WorkflowNotRetryableError, match="running"):
        wf.retry_now()
    assert chrono_forge_env.pending == [] and w.CALLS == {}
    wf.refresh_from_db()
    assert wf.state == "running" and wf.locked_by == "dead-run"


def test_retrying_a_failed_workflow_whose_cause_was_fixed_completes(chrono_forge_env):
    w.NeedsFix.perform_later("order")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get(key="order")
    assert wf.state == "failed"
    assert wf.execution_logs.filter(step_name__startswith="$workflow_failure$").count() == 1

    Workflow.objects.filter(pk=wf.pk).update(context={"fixed": True})
    wf.refresh_from_db()
    wf.retry_now()

    wf.refresh_from_db()
    assert wf.state == "completed"
    assert wf.context["done"] is True
    assert wf.execution_logs.filter(step_name__startswith="$workflow_retry$").count() == 1


def test_retry_later_of_a_stalled_workflow_runs_the_failed_step_again(chrono_forge_env):
    w.StallsUntilFixed.perform_later("card")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get(key="card")
    assert wf.state == "stalled" and w.CALLS["StallsUntilFixed.charge"] == 1

    w.StallsUntilFixed.FIXED = True
    wf.retry_later()
    token = token_for(Workflow.objects.get(key="card").next_run_at)
    assert [run.internal for run in chrono_forge_env.pending] == [
        {"retry_workflow": True, "token": token}
    ]
    chrono_forge_env.run_all()

    wf.refresh_from_db()
    assert wf.state == "completed" and w.CALLS["StallsUntilFixed.charge"] == 2
    assert wf.execution_logs.get(step_name="durably_execute$charge").result == "charged"


# -- resume ----------------------------------------------------------------------------------------
def test_resume_re_enqueues_an_idle_workflow(chrono_forge_env):
    wf = Workflow.objects.create(job_class=ONE_STEP, key="idle")
    assert wf.resume() is wf
    assert pending_keys(chrono_forge_env) == [(ONE_STEP, "idle")]
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"


@pytest.mark.parametrize("state", ["running", "completed", "failed", "stalled"])
def test_resume_refuses_other_states_before_enqueuing(chrono_forge_env, state):
    wf = Workflow.objects.create(job_class=ONE_STEP, key="k", state=state)
    with pytest.raises(NotExecutableError, match=f"only idle workflows can be resumed.*{state}"):
        wf.resume()
    assert chrono_forge_env.pending == []


def test_resume_refuses_a_class_that_no_longer_imports(chrono_forge_env):
    wf = Workflow.objects.create(job_class="tests.workflows_ops.Gone", key="k")
    with pytest.raises(NotExecutableError, match="Gone"):
        wf.resume()
    assert chrono_forge_env.pending == []


# -- force_unlock ----------------------------------------------------------------------------------
def test_force_unlock_clears_the_lock_and_parks_the_row(chrono_forge_env):
    wf = stranded_row(chrono_forge_env, lock_age=MIN)
    wf.force_unlock()
    assert (wf.state, wf.locked_by, wf.locked_at) == ("idle", None, None)
    row = Workflow.objects.get(pk=wf.pk)
    assert (row.state, row.locked_by, row.locked_at) == ("idle", None, None)
    assert chrono_forge_env.pending == []


def test_force_unlock_leaves_non_running_rows_alone(chrono_forge_env):
    wf = Workflow.objects.create(job_class=ONE_STEP, key="k", state="completed")
    wf.force_unlock()
    assert Workflow.objects.get(pk=wf.pk).state == "completed"


# -- reap ------------------------------------------------------------------------------------------
def test_a_stale_lock_is_reaped_and_nothing_else_is_written(chrono_forge_env):
    wf = stranded_row(chrono_forge_env)
    before = Workflow.objects.values().get(pk=wf.pk)
    with capture() as queries:
        assert Workflow.objects.reap_stalled() == 1
    assert pending_keys(chrono_forge_env) == [(ONE_STEP, "k")]
    assert Workflow.objects.values().get(pk=wf.pk) == before
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")
    ]
    assert writes == []
    assert ExecutionLog.objects.count() == 0 and ErrorLog.objects.count() == 0


def test_a_fresh_lock_is_not_reaped(chrono_forge_env):
    stranded_row(chrono_forge_env, lock_age=2 * MIN)
    assert Workflow.objects.reap_stalled() == 0
    assert chrono_forge_env.pending == []


@pytest.mark.parametrize("state", ["idle", "completed", "failed", "stalled"])
def test_only_running_rows_are_reaped(chrono_forge_env, state):
    stranded_row(chrono_forge_env, state=state, lock_age=400 * MIN)
    assert Workflow.objects.reap_stalled() == 0
    assert chrono_forge_env.pending == []


def test_a_running_row_without_locked_at_is_not_matched(chrono_forge_env):
    stranded_row(chrono_forge_env, lock_age=None)
    assert Workflow.objects.reap_stalled(stale_after=timedelta(0)) == 0


def test_stranded_branch_children_are_reaped_like_top_level_workflows(chrono_forge_env):
    parent = Workflow.objects.create(job_class=ONE_STEP, key="parent", state="idle")
    branch = ExecutionLog.objects.create(workflow=parent, step_name="branch$fan", state="pending")
    stranded_row(chrono_forge_env, key="child", parent_execution_log=branch)
    stranded_row(chrono_forge_env, key="top")
    assert Workflow.objects.reap_stalled() == 2
    assert sorted(key for _, key in pending_keys(chrono_forge_env)) == ["child", "top"]


def test_a_row_whose_class_is_gone_is_reaped_and_stalled_by_its_worker(chrono_forge_env):
    stranded_row(chrono_forge_env, key="ghost", job_class="tests.workflows_ops.Removed")
    stranded_row(chrono_forge_env, key="healthy")
    assert Workflow.objects.reap_stalled() == 2  # the sweep does not judge classes
    assert sorted(pending_keys(chrono_forge_env)) == [
        (ONE_STEP, "healthy"),
        ("tests.workflows_ops.Removed", "ghost"),
    ]
    chrono_forge_env.run_all()
    states = dict(Workflow.objects.values_list("key", "state"))
    assert states == {"ghost": "stalled", "healthy": "completed"}
    [error] = ErrorLog.objects.filter(workflow__key="ghost")
    assert "'tests.workflows_ops.Removed' is not a registered workflow class" in (
        error.error_message
    )


def test_threshold_default_and_explicit(chrono_forge_env):
    stranded_row(chrono_forge_env, lock_age=20 * MIN)
    assert Workflow.objects.reap_stalled() == 0
    assert Workflow.objects.reap_stalled(stale_after=10 * MIN) == 1
    assert Workflow.objects.reap_stalled(stale_after=600) == 1  # seconds work too


def test_configured_reap_stale_after(chrono_forge_env, settings):
    stranded_row(chrono_forge_env, lock_age=20 * MIN)
    settings.CHRONO_FORGE = {"REAP_STALE_AFTER": 15 * MIN}
    assert Workflow.objects.reap_stalled() == 1


def test_defaults_and_derivation(settings):
    settings.CHRONO_FORGE = {}
    assert conf.max_duration() == 10 * MIN and conf.reap_stale_after() == 30 * MIN
    settings.CHRONO_FORGE = {"MAX_DURATION": 20 * MIN}
    assert conf.reap_stale_after() == 60 * MIN
    settings.CHRONO_FORGE = {"MAX_DURATION": 20 * MIN, "REAP_STALE_AFTER": 45 * MIN}
    assert conf.reap_stale_after() == 45 * MIN


def test_the_executor_reads_max_duration_at_run_time(chrono_forge_env, settings):
    stranded_row(chrono_forge_env, lock_age=2 * MIN)
    with pytest.raises(ConcurrentExecutionError, match="dead-run"):
        w.OneStep._execute("k")
    assert Workflow.objects.get(key="k").locked_by == "dead-run"
    settings.CHRONO_FORGE = {"MAX_DURATION": MIN}
    w.OneStep._execute("k")
    assert Workflow.objects.get(key="k").state == "completed"


def test_reap_then_drain_steals_the_stale_lock_and_completes(chrono_forge_env):
    stranded_row(chrono_forge_env)
    assert Workflow.objects.reap_stalled() == 1
    chrono_forge_env.run_all()
    wf = Workflow.objects.get(key="k")
    assert wf.state == "completed" and wf.locked_by is None and wf.locked_at is None
    assert w.CALLS == {"OneStep.compute": 1}


def test_a_duplicate_delivery_during_a_live_lock_exits_quietly(chrono_forge_env):
    stranded_row(chrono_forge_env, lock_age=MIN)
    run_workflow(ONE_STEP, "k")  # the task swallows ConcurrentExecutionError
    assert Workflow.objects.get(key="k").locked_by == "dead-run" and w.CALLS == {}


# -- resume_overdue: the lost-continuation sweep ---------------------------------------------------
def halt_on_retry(env):
    """Run RetriesOnce to its wait-like halt: the step failed and a retry is due in 60 s."""
    w.RetriesOnce.perform_later("lost")
    env.run_due()
    wf = Workflow.objects.get(key="lost")
    assert wf.state == "idle" and wf.next_run_at == env.now + MIN
    return wf


def test_lost_continuation_is_recovered_by_resume_overdue(chrono_forge_env):
    env = chrono_forge_env
    wf = halt_on_retry(env)
    assert env.drop_pending() == 1  # the broker lost it

    env.advance(MIN + conf.as_timedelta(conf.get("RESUME_OVERDUE_GRACE")) - timedelta(seconds=1))
    assert Workflow.objects.resume_overdue() == 0  # due, but still within the grace
    env.advance(timedelta(seconds=2))
    assert Workflow.objects.resume_overdue() == 1
    assert env.run_all() == 1

    wf.refresh_from_db()
    assert wf.state == "completed" and wf.next_run_at is None
    assert w.CALLS == {"RetriesOnce.flaky": 2, "RetriesOnce.finish": 1}


def test_resume_overdue_and_a_late_original_delivery_run_only_once(chrono_forge_env):
    env = chrono_forge_env
    halt_on_retry(env)  # the original continuation is kept (it is only late)
    env.advance(10 * MIN)
    assert Workflow.objects.resume_overdue() == 1
    assert len(env.pending) == 2
    env.run_all()
    assert Workflow.objects.get(key="lost").state == "completed"
    assert w.CALLS == {"RetriesOnce.flaky": 2, "RetriesOnce.finish": 1}


def test_resume_overdue_grace_argument_and_setting(chrono_forge_env, settings):
    env = chrono_forge_env
    halt_on_retry(env)
    env.drop_pending()
    env.advance(3 * MIN)  # 2 minutes overdue
    assert Workflow.objects.resume_overdue() == 0
    assert Workflow.objects.resume_overdue(grace=MIN) == 1
    env.drop_pending()
    settings.CHRONO_FORGE = {"RESUME_OVERDUE_GRACE": 60}
    assert Workflow.objects.resume_overdue() == 1


@pytest.mark.parametrize("state", ["running", "completed"])
def test_resume_overdue_ignores_running_and_completed_rows(chrono_forge_env, state):
    Workflow.objects.create(
        job_class=ONE_STEP, key="k", state=state, next_run_at=chrono_forge_env.now - 60 * MIN
    )
    assert Workflow.objects.resume_overdue() == 0


@pytest.mark.parametrize("state", ["failed", "stalled"])
def test_resume_overdue_re_sends_a_late_operator_retry_as_a_retry(chrono_forge_env, state):
    """A blocked row with a due time has a pending operator retry whose delivery was lost."""
    due = chrono_forge_env.now - 60 * MIN
    Workflow.objects.create(job_class=ONE_STEP, key="k", state=state, next_run_at=due)
    Workflow.objects.create(job_class=ONE_STEP, key="plain", state=state, next_run_at=None)
    assert Workflow.objects.resume_overdue() == 1
    [run] = chrono_forge_env.pending
    assert run.key == "k" and run.internal == {"retry_workflow": True, "token": token_for(due)}
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="k").state == "completed"
    assert Workflow.objects.get(key="plain").state == state  # blocked, no retry asked: left alone


def test_resume_overdue_ignores_parked_rows_with_nothing_scheduled(chrono_forge_env):
    Workflow.objects.create(
        job_class=ONE_STEP,
        key="k",
        next_run_at=None,
        parked_on="continue_if$approved",
        modified=chrono_forge_env.now - 60 * MIN,
    )
    assert Workflow.objects.resume_overdue(grace=timedelta(0)) == 0
    assert Workflow.objects.parked().count() == 1


def test_resume_overdue_wakes_an_idle_row_with_nothing_scheduled_and_not_parked(chrono_forge_env):
    """A row in none of the four states (an older version's park, a forced unlock) is woken once
    it is older than the grace: it gets a due time and a delivery."""
    row = Workflow.objects.create(job_class=ONE_STEP, key="k", next_run_at=None)
    Workflow.objects.filter(pk=row.pk).update(modified=chrono_forge_env.now - 10 * MIN)
    assert list(Workflow.objects.unaccounted()) == [row]
    assert Workflow.objects.resume_overdue() == 1
    assert Workflow.objects.get(pk=row.pk).next_run_at == chrono_forge_env.now
    assert Workflow.objects.unaccounted().count() == 0
    chrono_forge_env.run_all()
    assert Workflow.objects.get(pk=row.pk).state == "completed"


def test_resume_overdue_resumes_a_row_whose_class_is_gone_and_its_worker_stalls_it(
    chrono_forge_env,
):
    past = chrono_forge_env.now - 60 * MIN
    Workflow.objects.create(job_class="tests.workflows_ops.Removed", key="ghost", next_run_at=past)
    Workflow.objects.create(job_class=ONE_STEP, key="ok", next_run_at=past)
    assert Workflow.objects.resume_overdue() == 2
    chrono_forge_env.run_all()
    assert dict(Workflow.objects.values_list("key", "state")) == {
        "ghost": "stalled",
        "ok": "completed",
    }
    [error] = ErrorLog.objects.filter(workflow__key="ghost")
    assert "is not a registered workflow class" in error.error_message


def test_w004_warns_when_reaping_before_a_lock_can_be_taken_over(settings):
    from chrono_forge.checks import check_reap_threshold

    settings.CHRONO_FORGE = {"MAX_DURATION": 20 * MIN, "REAP_STALE_AFTER": 15 * MIN}
    [warning] = check_reap_threshold()
    assert warning.id == "chrono_forge.W004" and "MAX_DURATION" in warning.hint
    settings.CHRONO_FORGE = {"MAX_DURATION": 20 * MIN, "REAP_STALE_AFTER": 20 * MIN}
    assert check_reap_threshold() == []
    settings.CHRONO_FORGE = {}
    assert check_reap_threshold() == []


@pytest.mark.django_db(transaction=True)
def test_sweeps_survive_an_enqueue_that_closes_the_connection(chrono_forge_env):
    """django-q2's ORM broker closes the caller's connection on enqueue when CONN_MAX_AGE=0; the
    sweeps must not hold a cursor across it."""
    from chrono_forge import dispatch

    class ClosingDispatcher:
        def __init__(self, inner):
            self.inner = inner

        def enqueue(self, *args, **kwargs):
            connection.close()
            self.inner.enqueue(*args, **kwargs)

        def enqueue_many(self, *args, **kwargs):  # the reaper's bulk path
            connection.close()
            self.inner.enqueue_many(*args, **kwargs)

    for i in range(3):
        stranded_row(chrono_forge_env, key=f"s{i}")
        Workflow.objects.create(
            job_class=ONE_STEP, key=f"o{i}", next_run_at=chrono_forge_env.now - 60 * MIN
        )
    previous = dispatch.set_dispatcher(ClosingDispatcher(chrono_forge_env.dispatcher))
    try:
        assert Workflow.objects.reap_stalled() == 3
        assert Workflow.objects.resume_overdue() == 3
    finally:
        dispatch.set_dispatcher(previous)
    assert sorted(key for _, key in pending_keys(chrono_forge_env)) == [
        "o0",
        "o1",
        "o2",
        "s0",
        "s1",
        "s2",
    ]
