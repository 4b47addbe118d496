"""wait_until (polling by continuation)."""

from datetime import datetime, timedelta

import pytest

from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_waits as ww
from tests.core_sql import capture, statements
from tests.waits_support import attempt_updates, log, refresh

pytestmark = pytest.mark.django_db

JOB = "tests.workflows_waits.WaitUntil"


def test_condition_error_without_policy_stalls_with_one_attempt(chrono_forge_env):
    # 50: an unlisted error, no per-call policy -> wait_default retries nothing.
    wf = ww.WaitUntil.perform_later("w", cond="explodes")
    chrono_forge_env.run_all()
    entry = log(wf, "wait_until$explodes")
    assert (entry.state, entry.attempts) == ("failed", 1)
    assert entry.error_class == "ValueError" and entry.error_message == "condition exploded"
    assert refresh(wf).state == "stalled"
    assert ww.CALLS["explodes"] == 1
    assert list(ErrorLog.objects.values_list("error_class", "step_name", "attempt")) == [
        ("ValueError", "wait_until$explodes", 1)
    ]
    assert chrono_forge_env.pending == []


def test_listed_transient_error_is_retried_per_the_call_policy(chrono_forge_env):
    # 51: retry_on [TransientError], max 5; raises once, then true -> completed.
    wf = ww.WaitUntil.perform_later("w", cond="transient_once", policy=5)
    chrono_forge_env.run_all()
    entry = log(wf, "wait_until$transient_once")
    assert (entry.state, entry.attempts) == ("completed", 2)
    assert entry.metadata["result"] is True
    assert refresh(wf).state == "completed"
    assert ErrorLog.objects.get().error_class == "tests.workflows_waits.TransientError"


def test_unlisted_error_is_not_retried_even_with_a_call_policy(chrono_forge_env):
    wf = ww.WaitUntil.perform_later("w", cond="explodes", policy=5)
    chrono_forge_env.run_all()
    assert (log(wf, "wait_until$explodes").attempts, refresh(wf).state) == (1, "stalled")


def test_negative_timeout_times_out_recorded_as_wait_condition_not_met(chrono_forge_env):
    # 52: timeout -1 s, condition always false.
    wf = ww.WaitUntil.perform_later("w", cond="never", timeout=-1)
    chrono_forge_env.run_all()
    error = ErrorLog.objects.get()
    assert error.error_class == "chrono_forge.exceptions.WaitConditionNotMet"
    assert error.step_name == "wait_until$never" and error.attempt == 1
    entry = log(wf, "wait_until$never")
    assert entry.state == "failed" and entry.metadata["result"] == "timed_out"
    assert entry.error_class == "chrono_forge.exceptions.WaitConditionNotMet"
    wf = refresh(wf)
    assert wf.state == "stalled" and wf.next_run_at is None
    assert ww.CALLS["never"] == 1  # checked once, then timed out


def test_polls_until_the_timeout_then_stalls(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ww.WaitUntil.perform_later("w", cond="never", timeout=25, interval=10)
    chrono_forge_env.run_all()
    # polls at 0, 10, 20 and a last one exactly at the deadline (25), not at 30
    assert ww.CALLS["never"] == 4
    assert chrono_forge_env.now == start + timedelta(seconds=25)
    entry = log(wf, "wait_until$never")
    assert entry.attempts == 4 and entry.metadata["result"] == "timed_out"
    assert refresh(wf).state == "stalled"
    assert ErrorLog.objects.count() == 1


def test_metadata_stores_timeout_and_interval_and_result(chrono_forge_env):
    # 53: timeout_at and check_interval stored; a met condition stores result true.
    start = chrono_forge_env.now
    wf = ww.WaitUntil.perform_later("w", cond="ready", timeout=60, interval=10)
    chrono_forge_env.run_due()
    entry = log(wf, "wait_until$ready")
    assert entry.state == "pending" and entry.attempts == 1
    assert entry.metadata == {
        "condition": "ready",
        "timeout_at": (start + timedelta(seconds=60)).isoformat(),
        "check_interval": 10.0,
    }
    ww.FLAGS["ready"] = True
    chrono_forge_env.run_all()
    entry = log(wf, "wait_until$ready")
    assert entry.state == "completed" and entry.attempts == 2
    assert entry.metadata["result"] is True
    assert entry.metadata["timeout_at"] == (start + timedelta(seconds=60)).isoformat()
    assert refresh(wf).context["result"] is True


def test_replay_of_a_completed_wait_returns_the_stored_result_without_calling_the_condition(
    chrono_forge_env,
):
    # 53: the workflow parks after the wait (on a closed gate below it) and is replayed.
    ww.FLAGS["ready"] = True
    wf = ww.WaitUntil.perform_later("w", cond="ready", then=False)
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed" and ww.CALLS["ready"] == 1
    # Replay the same perform: a completed wait answers from its log.
    ww.FLAGS["ready"] = False
    wf.execution_logs.filter(step_name="$workflow_completion$").delete()
    Workflow.objects.filter(pk=wf.pk).update(state="idle", completed_at=None)
    ww.WaitUntil.perform_later("w")
    chrono_forge_env.run_all()
    assert ww.CALLS["ready"] == 1
    assert refresh(wf).state == "completed" and refresh(wf).context["result"] is True


def test_class_default_policy_is_not_inherited(chrono_forge_env):
    # 54: the class allows 5 attempts; wait_until still retries nothing.
    wf = ww.WaitUntilClassPolicy.perform_later("w")
    chrono_forge_env.run_all()
    assert ww.CALLS["explodes"] == 1
    assert refresh(wf).state == "stalled"
    assert log(wf, "wait_until$explodes").attempts == 1


def test_each_unmet_poll_reschedules_after_check_interval_with_wait_condition(chrono_forge_env):
    # 55: every not-yet-met poll halts with a continuation due check_interval later, carrying
    # wait_condition.
    start = chrono_forge_env.now
    wf = ww.WaitUntil.perform_later("w", cond="ready_third_time", timeout=60, interval=10)
    seen = []
    for _ in range(2):
        chrono_forge_env.run_due()
        (run,) = chrono_forge_env.pending
        seen.append((run.key, run.run_at - start, run.internal["wait_condition"]))
        assert refresh(wf).next_run_at == run.run_at
        chrono_forge_env.travel_to(run.run_at)
    assert seen == [
        ("w", timedelta(seconds=10), "ready_third_time"),
        ("w", timedelta(seconds=20), "ready_third_time"),
    ]
    chrono_forge_env.run_due()
    assert refresh(wf).state == "completed"
    assert log(wf, "wait_until$ready_third_time").attempts == 3


def test_first_poll_persists_pending_in_one_insert_later_polls_update_once(chrono_forge_env):
    wf = ww.WaitUntil.perform_later("w", cond="ready")
    with capture() as first:
        chrono_forge_env.run_due()
    assert len(statements(first, "INSERT")) == 1 and attempt_updates(first) == []
    chrono_forge_env.advance(timedelta(seconds=10))
    with capture() as later:
        chrono_forge_env.run_due()
    assert len(statements(later, "INSERT")) == 0
    assert len(statements(later, "UPDATE")) == 1  # attempt bump (metadata unchanged, not rewritten)
    assert log(wf, "wait_until$ready").state == "pending"


def test_operator_retry_of_a_timed_out_wait_gets_a_fresh_timeout(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ww.WaitUntil.perform_later("w", cond="ready", timeout=30, interval=10)
    chrono_forge_env.run_all()
    assert refresh(wf).state == "stalled"
    chrono_forge_env.advance(timedelta(hours=2))
    retried_at = chrono_forge_env.now
    ww.WaitUntil.retry_now("w")
    entry = log(wf, "wait_until$ready")
    assert entry.state == "pending" and entry.attempts == 1  # a fresh budget
    assert datetime.fromisoformat(entry.metadata["timeout_at"]) == retried_at + timedelta(
        seconds=30
    )
    assert "result" not in entry.metadata
    ww.FLAGS["ready"] = True
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    assert chrono_forge_env.now == retried_at + timedelta(seconds=10)
    assert datetime.fromisoformat(
        log(wf, "wait_until$ready").metadata["timeout_at"]
    ) > start + timedelta(hours=2)


def test_a_caught_timeout_lets_the_workflow_go_on_and_replays_the_same_branch(chrono_forge_env):
    wf = ww.WaitUntilCatches.perform_later("w")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["branch"] == "timed out"
    assert ww.CALLS["never"] == 1  # the replay after the wait(5) did not poll again
    assert ErrorLog.objects.count() == 1  # and did not record the timeout twice
    assert ww.CALLS["done"] == 1
    assert wf.context["passes"] == 2


def test_a_caught_condition_error_replays_without_calling_the_condition(chrono_forge_env):
    wf = ww.WaitUntilCatches.perform_later("w", cond="explodes")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["branch"] == "failed"
    assert wf.context["passes"] == 2 and ww.CALLS["explodes"] == 1
    assert ErrorLog.objects.count() == 1


def test_custom_name(chrono_forge_env):
    ww.FLAGS["ready"] = True
    wf = ww.WaitUntil.perform_later("w", cond="ready", name="payment")
    chrono_forge_env.run_all()
    entry = log(wf, "wait_until$payment")
    assert entry.metadata["condition"] == "ready" and entry.state == "completed"
