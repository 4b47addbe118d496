"""The ``on_cancel`` hook: run once as a durable step with the cancel's reason, retried per its
policy then recorded failed, re-sent by the overdue sweep when its delivery is lost, never confused
with a pending forced retry, scheduled for each hooked child of a bulk cancel, run once across a
hard kill at any step boundary, and no change for a class without a hook."""

from __future__ import annotations

import pytest

from chrono_forge import cancellation, dispatch, step_names
from chrono_forge.executor import token_for
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.retry import RetryPolicy
from chrono_forge.testing import assert_crash_safe
from chrono_forge.workflow import DurableWorkflow
from tests import workflows_on_cancel as oc

pytestmark = pytest.mark.django_db


def row(key: str) -> Workflow:
    return Workflow.objects.get(key=key)


def hook_logs(key: str) -> list[ExecutionLog]:
    return list(
        ExecutionLog.objects.filter(
            workflow__key=key, step_name__startswith=step_names.ON_CANCEL_MARKER_PREFIX
        ).order_by("pk")
    )


def scheduled_run(env, cls, key: str, **kwargs) -> Workflow:
    """A run past its first pass, waiting (its continuation pending)."""
    cls.perform_later(key, **kwargs)
    env.run_due()
    wf = row(key)
    assert wf.state == "idle" and wf.next_run_at is not None
    return wf


def assert_hook_done(key: str) -> Workflow:
    """The run is cancelled, with nothing scheduled and no hook pending."""
    wf = row(key)
    assert wf.state == "cancelled"
    assert (wf.next_run_at, wf.parked_on, wf.locked_by) == (None, None, None)
    return wf


# -- runs once, with the reason ------------------------------------------------------------------
def test_a_cancelled_run_is_scheduled_for_its_hook_which_runs_once_with_the_reason(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.Reserve, "once")
    wf = oc.Reserve.cancel("once", reason="refunded by hand")
    marker = step_names.on_cancel_marker(int(wf.cancelled_at.timestamp()))
    # scheduled: a due time the overdue sweep honours, and the hook's step names what is due
    assert (wf.state, wf.next_run_at, wf.parked_on) == ("cancelled", wf.cancelled_at, marker)
    chrono_forge_env.run_all()  # the hook's delivery; the wait's continuation exits
    assert oc.REASONS == [("once", "refunded by hand")]
    assert (oc.calls("reserve"), oc.calls("ship")) == (1, 0)
    (log,) = hook_logs("once")
    assert (log.step_name, log.state, log.attempts) == (marker, "completed", 1)
    assert log.result == {"released": "once"}
    assert_hook_done("once")
    # a duplicate of the hook's delivery (same token) after the completion commit runs nothing
    dispatch.enqueue(wf.job_class, "once", token=token_for(wf.cancelled_at))
    assert chrono_forge_env.run_all() == 1
    assert oc.calls("hook") == 1 and len(hook_logs("once")) == 1


def test_a_pass_cancelled_mid_step_runs_the_hook_after_its_release_once(chrono_forge_env):
    oc.FLAGS["cancel_in_reserve"] = True
    oc.Reserve.perform_later("mid")
    chrono_forge_env.run_all()
    assert (oc.calls("reserve"), oc.calls("ship"), oc.calls("hook")) == (1, 0, 1)
    assert oc.REASONS == [("mid", "stop while reserving")]
    reserve = ExecutionLog.objects.get(workflow__key="mid", step_name="durably_execute$reserve")
    (hook,) = hook_logs("mid")
    assert reserve.state == "completed" and hook.state == "completed"
    assert hook.started_at >= reserve.completed_at  # after the pass released
    assert_hook_done("mid")


def test_a_hook_delivery_finding_the_cancelled_pass_still_running_waits_for_its_release(
    chrono_forge_env,
):
    oc.CancelsItself.perform_later("busy")
    chrono_forge_env.run_all()  # the cancel's own hook delivery arrives while the pass holds it
    assert (oc.calls("only"), oc.calls("never"), oc.calls("self_hook")) == (1, 0, 1)
    assert oc.REASONS == [("busy", "changed my mind")]
    assert_hook_done("busy")


# -- failures: retried per the policy, then recorded -----------------------------------------------
def test_a_failing_hook_is_retried_per_its_policy_then_recorded_failed_and_the_run_stays_cancelled(
    chrono_forge_env,
):
    failed = []

    def receive(sender, step_name, error, attempt, **kwargs):
        failed.append((step_name, type(error).__name__, attempt))

    from chrono_forge import signals

    scheduled_run(chrono_forge_env, oc.FlakyHook, "flaky")
    signals.step_failed.connect(receive, weak=False, dispatch_uid="test-on-cancel")
    try:
        oc.FlakyHook.cancel("flaky", reason="why not")
        chrono_forge_env.run_all()
    finally:
        signals.step_failed.disconnect(dispatch_uid="test-on-cancel")
    assert oc.calls("flaky_hook") == 3  # on_cancel_retry_policy: 3 attempts
    (log,) = hook_logs("flaky")
    assert (log.state, log.attempts, log.error_class) == ("failed", 3, "ConnectionError")
    assert "attempt 3" in log.error_message
    errors = ErrorLog.objects.filter(workflow__key="flaky", step_name=log.step_name)
    assert list(errors.order_by("pk").values_list("attempt", flat=True)) == [1, 2, 3]
    assert failed == [(log.step_name, "ConnectionError", 3)]
    assert_hook_done("flaky")


def test_a_hook_that_fails_once_then_succeeds_stores_its_result(chrono_forge_env):
    scheduled_run(chrono_forge_env, oc.FlakyHook, "heals")
    oc.FlakyHook.cancel("heals")
    chrono_forge_env.run_due()  # the first attempt fails; its retry is due 1 s later
    wf = row("heals")
    (log,) = hook_logs("heals")
    assert (log.state, log.attempts) == ("pending", 1)
    assert wf.parked_on == log.step_name and wf.next_run_at is not None  # scheduled for it
    oc.FLAGS["hook_fixed"] = True
    chrono_forge_env.run_all()
    (log,) = hook_logs("heals")
    assert (log.state, log.attempts, log.result) == ("completed", 2, 2)
    assert_hook_done("heals")


def test_without_its_own_policy_the_hook_takes_the_class_retry_policy(chrono_forge_env):
    scheduled_run(chrono_forge_env, oc.DefaultPolicyHook, "default")
    oc.DefaultPolicyHook.cancel("default")
    chrono_forge_env.run_all()
    assert oc.calls("default_policy_hook") == 2  # the class's retry_policy: 2 attempts
    (log,) = hook_logs("default")
    assert (log.state, log.attempts) == ("failed", 2)


# -- liveness: a lost delivery ---------------------------------------------------------------------
def test_a_lost_hook_delivery_is_resent_by_the_overdue_sweep_as_a_hook_not_a_forced_retry(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.Reserve, "lost")
    oc.Reserve.cancel("lost", reason="lost delivery")
    assert chrono_forge_env.drop_pending() == 2  # the broker loses the hook and the continuation
    chrono_forge_env.advance(3600)
    assert Workflow.objects.overdue().filter(key="lost").exists()
    assert Workflow.objects.resume_overdue() == 1
    (resent,) = chrono_forge_env.pending
    assert "retry_workflow" not in resent.kwargs and "resume_cancelled" not in resent.kwargs
    chrono_forge_env.run_all()
    assert oc.REASONS == [("lost", "lost delivery")]
    assert oc.calls("ship") == 0  # the run was not resumed
    assert_hook_done("lost")
    assert not Workflow.objects.overdue().filter(key="lost").exists()


def test_a_lost_retry_of_a_failing_hook_is_resent_by_the_overdue_sweep(chrono_forge_env):
    scheduled_run(chrono_forge_env, oc.FlakyHook, "lost-retry")
    oc.FlakyHook.cancel("lost-retry")
    chrono_forge_env.run_due()  # attempt 1 fails, attempt 2 is scheduled
    chrono_forge_env.drop_pending()
    oc.FLAGS["hook_fixed"] = True
    chrono_forge_env.advance(3600)
    assert Workflow.objects.resume_overdue() == 1
    chrono_forge_env.run_all()
    (log,) = hook_logs("lost-retry")
    assert (log.state, log.attempts) == ("completed", 2)


def test_a_worker_killed_in_the_hook_leaves_the_row_scheduled_and_the_lost_attempt_is_charged(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.FlakyHook, "killed")
    wf = oc.FlakyHook.cancel("killed")
    oc.FLAGS["hook_fixed"] = True
    chrono_forge_env.drop_pending()
    # what a delivery that died inside the hook body leaves: the attempt recorded, the lease
    from chrono_forge.executor import Delivery

    run = Delivery(oc.FlakyHook, "killed", token=token_for(wf.next_run_at)).acquire()
    assert run is not None and run.on_cancel_step is not None
    run.steps.record_attempt(run.on_cancel_step, None, state="pending")
    leased = row("killed")
    assert leased.next_run_at > wf.next_run_at and leased.parked_on == run.on_cancel_step
    assert Workflow.objects.resume_overdue() == 0  # the lease is not due yet
    chrono_forge_env.advance(3600)
    assert Workflow.objects.resume_overdue() == 1
    chrono_forge_env.run_all()
    (log,) = hook_logs("killed")
    assert (log.state, log.attempts) == ("completed", 2)
    lost = ErrorLog.objects.get(workflow__key="killed", step_name=log.step_name)
    assert (lost.attempt, lost.error_class) == (1, "chrono_forge.exceptions.StepAttemptLost")


# -- a pending hook and a forced retry are not confused --------------------------------------------
def test_a_lost_forced_retry_after_the_hook_ran_is_resent_as_a_forced_retry(chrono_forge_env):
    scheduled_run(chrono_forge_env, oc.Reserve, "forced", wait=1)
    oc.Reserve.cancel("forced", reason="by mistake")
    chrono_forge_env.run_all()
    assert oc.calls("hook") == 1
    oc.Reserve.retry_later("forced", resume_cancelled=True)
    assert row("forced").parked_on is None
    chrono_forge_env.drop_pending()
    chrono_forge_env.advance(3600)
    assert Workflow.objects.resume_overdue() == 1
    (resent,) = chrono_forge_env.pending
    assert resent.kwargs.get("retry_workflow") and resent.kwargs.get("resume_cancelled")
    chrono_forge_env.run_all()
    assert row("forced").state == "completed"
    assert (oc.calls("hook"), oc.calls("ship")) == (1, 1)


def test_a_forced_retry_requested_while_the_hook_is_pending_supersedes_it(chrono_forge_env):
    scheduled_run(chrono_forge_env, oc.Reserve, "supersede", wait=1)
    oc.Reserve.cancel("supersede", reason="by mistake")  # its hook delivery is queued
    oc.Reserve.retry_later("supersede", resume_cancelled=True)
    wf = row("supersede")
    assert wf.parked_on is None and wf.next_run_at is not None  # a forced retry is due
    chrono_forge_env.run_all()  # the hook's delivery no longer matches: it exits
    assert row("supersede").state == "completed"
    assert (oc.calls("hook"), oc.calls("ship")) == (0, 1)
    assert hook_logs("supersede") == []


def test_a_run_cancelled_again_after_a_forced_retry_runs_a_fresh_hook(chrono_forge_env):
    scheduled_run(chrono_forge_env, oc.Reserve, "twice", wait=3600)
    oc.Reserve.cancel("twice", reason="first")
    chrono_forge_env.run_due()  # the hook (the wait's continuation is not due yet)
    oc.Reserve.retry_later("twice", resume_cancelled=True)
    chrono_forge_env.run_due()  # replays to the wait
    assert row("twice").state == "idle"
    chrono_forge_env.advance(5)
    oc.Reserve.cancel("twice", reason="second")
    chrono_forge_env.run_all()
    assert oc.REASONS == [("twice", "first"), ("twice", "second")]
    assert [log.state for log in hook_logs("twice")] == ["completed", "completed"]


def test_an_operator_retry_leaves_a_failed_hook_of_an_earlier_cancellation_failed(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.FlakyHook, "history")
    oc.FlakyHook.cancel("history")
    chrono_forge_env.run_all()
    oc.FlakyHook.retry_now("history", resume_cancelled=True)
    (log,) = hook_logs("history")
    assert (log.state, log.attempts) == ("failed", 3)
    assert row("history").state == "completed"  # resumed past its wait, the hook still failed


# -- a class without a hook is unchanged -----------------------------------------------------------
def test_a_class_without_a_hook_is_cancelled_with_nothing_scheduled_and_nothing_enqueued(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.Plain, "plain")
    before = len(chrono_forge_env.pending)
    wf = oc.Plain.cancel("plain")
    assert (wf.next_run_at, wf.parked_on) == (None, None)
    assert len(chrono_forge_env.pending) == before
    chrono_forge_env.advance(3600)
    assert not Workflow.objects.overdue().filter(key="plain").exists()
    chrono_forge_env.run_all()
    assert hook_logs("plain") == []


# -- bulk cancel -----------------------------------------------------------------------------------
def test_a_bulk_cancel_schedules_and_enqueues_the_hook_of_each_hooked_child(
    chrono_forge_env, monkeypatch
):
    monkeypatch.setattr(cancellation, "CANCEL_BATCH_SIZE", 10)
    oc.Tree.perform_now("t", hooked=25, plain=5)
    chrono_forge_env.drop_pending()  # forget the children's first passes and the poller
    oc.Tree.cancel("t", reason="shop closed")
    kids = Workflow.objects.filter(key__startswith="t$")
    assert set(kids.values_list("state", flat=True)) == {"cancelled"}
    hooked = kids.filter(job_class=oc.HookLeaf.job_class())
    plain = kids.filter(job_class=oc.PlainLeaf.job_class())
    assert hooked.count() == 25 and plain.count() == 5
    assert not hooked.filter(next_run_at__isnull=True).exists()
    assert all(
        step_names.is_on_cancel_marker(p) for p in hooked.values_list("parked_on", flat=True)
    )
    assert not plain.filter(next_run_at__isnull=False).exists()
    assert not plain.filter(parked_on__isnull=False).exists()
    assert sorted(run.key for run in chrono_forge_env.pending) == sorted(
        hooked.values_list("key", flat=True)
    )
    chrono_forge_env.run_all()
    assert oc.calls("leaf_hook") == 25
    assert {reason for _key, reason in oc.REASONS} == {"parent cancelled: shop closed"}
    assert not kids.filter(next_run_at__isnull=False).exists()
    assert (
        ExecutionLog.objects.filter(
            workflow__key__startswith="t$",
            step_name__startswith=step_names.ON_CANCEL_MARKER_PREFIX,
            state="completed",
        ).count()
        == 25
    )


# -- a hard kill at every step boundary ------------------------------------------------------------
def test_the_hook_runs_at_least_once_and_never_again_after_its_completion_across_kills():
    report = assert_crash_safe(oc.CancelsInPerform, "crash")
    (state,) = [outcome["state"] for outcome in report.clean.values()]
    assert state == "cancelled"
    (steps,) = [outcome["steps"] for outcome in report.clean.values()]
    assert steps == {
        step_names.ON_CANCEL_MARKER_PREFIX: {
            "state": "completed",
            "attempts": 1,
            "result": "cancelled from perform",
        }
    }
    described = [boundary.description for boundary in report.boundaries]
    assert any("$workflow_on_cancel$" in text and "not yet committed" in text for text in described)
    assert any("$workflow_on_cancel$" in text and "inserted" in text for text in described)


# -- bad definitions -------------------------------------------------------------------------------
def test_a_hook_with_a_wrong_signature_or_a_bad_policy_is_refused_at_class_definition():
    with pytest.raises(TypeError, match=r"on_cancel must take \(self, reason\)"):

        class NoReason(DurableWorkflow):
            def perform(self) -> None:
                pass

            def on_cancel(self):
                pass

    with pytest.raises(TypeError, match="on_cancel must be a plain method"):

        class Static(DurableWorkflow):
            def perform(self) -> None:
                pass

            on_cancel = staticmethod(lambda reason: None)

    with pytest.raises(TypeError, match="on_cancel_retry_policy"):

        class BadPolicy(DurableWorkflow):
            on_cancel_retry_policy = "three times"

            def perform(self) -> None:
                pass

            def on_cancel(self, reason):
                pass

    class Fine(DurableWorkflow):
        on_cancel_retry_policy = [RetryPolicy(max_attempts=2)]

        def perform(self) -> None:
            pass

        def on_cancel(self, reason, *extra):
            pass


# -- what the operator sees ------------------------------------------------------------------------
def test_the_waiting_reason_and_the_state_badge_say_the_hook_is_due(chrono_forge_env):
    from chrono_forge.liveness import liveness
    from chrono_forge.pages.formatting import row_status

    scheduled_run(chrono_forge_env, oc.Reserve, "shown")
    wf = oc.Reserve.cancel("shown", reason="refunded")
    reason = liveness(wf)
    assert reason is not None and (reason.kind, reason.overdue) == ("on_cancel", False)
    assert "on_cancel hook due" in row_status(wf)[2]
    chrono_forge_env.advance(3600)
    assert liveness(wf).overdue  # type: ignore[union-attr]
    chrono_forge_env.run_all()
    done = row("shown")
    assert liveness(done) is None and row_status(done)[2] == "refunded"
    oc.Reserve.retry_later("shown", resume_cancelled=True)
    forced = liveness(row("shown"))
    assert forced is not None and forced.kind == "retry"


def test_a_hook_taking_its_worker_down_is_charged_and_let_through_with_the_retry_scheduled(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.ExitingHook, "exits")
    oc.ExitingHook.cancel("exits")
    with pytest.raises(SystemExit):
        chrono_forge_env.run_due()
    wf = row("exits")
    (log,) = hook_logs("exits")
    assert (log.state, log.attempts) == ("pending", 1)
    assert wf.parked_on == log.step_name and wf.next_run_at is not None  # still scheduled
    lost = ErrorLog.objects.get(workflow__key="exits", step_name=log.step_name)
    assert lost.error_class == "SystemExit"
    chrono_forge_env.run_all()  # the retry the failure scheduled
    (log,) = hook_logs("exits")
    assert (log.state, log.attempts, log.result) == ("completed", 2, "second time")
    assert_hook_done("exits")


def test_a_hook_returning_what_json_cannot_hold_fails_its_step_once_and_is_not_retried(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.UnstorableHook, "unstorable")
    oc.UnstorableHook.cancel("unstorable")
    chrono_forge_env.run_all()
    assert oc.calls("unstorable_hook") == 1
    (log,) = hook_logs("unstorable")
    assert (log.state, log.attempts, log.error_class) == (
        "failed",
        1,
        "chrono_forge.exceptions.InvalidStepResult",
    )
    (error,) = ErrorLog.objects.filter(workflow__key="unstorable", step_name=log.step_name)
    assert error.error_class == "chrono_forge.exceptions.InvalidStepResult"
    assert_hook_done("unstorable")


def test_a_lost_attempt_that_uses_up_the_hook_budget_fails_the_step_without_running_it_again(
    chrono_forge_env,
):
    scheduled_run(chrono_forge_env, oc.OneShotHook, "one-shot")
    wf = oc.OneShotHook.cancel("one-shot")
    chrono_forge_env.drop_pending()
    # a delivery that died inside the hook body: the attempt recorded, the lease taken
    from chrono_forge.executor import Delivery

    run = Delivery(oc.OneShotHook, "one-shot", token=token_for(wf.next_run_at)).acquire()
    assert run is not None and run.on_cancel_step is not None
    run.steps.record_attempt(run.on_cancel_step, None, state="pending")
    chrono_forge_env.advance(3600)
    assert Workflow.objects.resume_overdue() == 1
    chrono_forge_env.run_all()
    assert oc.calls("one_shot_hook") == 0
    (log,) = hook_logs("one-shot")
    assert (log.state, log.attempts, log.error_class) == (
        "failed",
        1,
        "chrono_forge.exceptions.StepAttemptLost",
    )
    assert_hook_done("one-shot")
