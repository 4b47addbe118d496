"""durably_repeat, catch-up and fast-forward (and its first tick)."""

from datetime import UTC, datetime, timedelta

import pytest

from chrono_forge.models import ErrorLog, ExecutionLog
from chrono_forge.primitives.durably_repeat import fast_forward
from chrono_forge.steps import StepLogs
from tests import workflows_waits as ww
from tests.core_sql import capture, data_statements, statements
from tests.waits_support import attempt_updates, log, refresh

pytestmark = pytest.mark.django_db


def repetitions(wf, step="durably_repeat$tick"):
    return list(
        ExecutionLog.objects.filter(workflow=wf, step_name__startswith=f"{step}$").order_by("id")
    )


def summaries(wf):
    return [
        r
        for r in ExecutionLog.objects.filter(workflow=wf).order_by("pk")  # the oldest first
        if "fast_forwarded" in (r.metadata or {})
    ]


def timed_out_ticks(wf):
    """Per-tick timeout rows: a repetition failed with TimeoutError that is not a summary row."""
    return [
        r
        for r in ExecutionLog.objects.filter(workflow=wf, error_class="TimeoutError")
        if "fast_forwarded" not in r.metadata
    ]


def iso(moment):
    return moment.isoformat()


# -- the schedule, the rows, the method's argument, till -------------------------------------------


def test_coordination_and_repetition_logs(chrono_forge_env):
    # 66 / 70: every 2 s until 3 runs; rows carry scheduled_for / timeout_at / parent_id.
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=2, limit=3)
    chrono_forge_env.run_due()
    assert [run.run_at for run in chrono_forge_env.pending] == [start + timedelta(seconds=2)]
    assert refresh(wf).next_run_at == start + timedelta(seconds=2)
    chrono_forge_env.run_all()
    coordination = log(wf, "durably_repeat$tick")
    reps = repetitions(wf)
    ticks = [start + timedelta(seconds=2 * n) for n in range(3)]
    assert [r.step_name for r in reps] == [
        f"durably_repeat$tick${int(t.timestamp())}" for t in ticks
    ]
    assert [r.metadata for r in reps] == [
        {
            "scheduled_for": iso(t),
            "timeout_at": iso(t + timedelta(hours=1)),
            "parent_id": coordination.pk,
        }
        for t in ticks
    ]
    assert all(r.state == "completed" and r.attempts == 1 for r in reps)
    assert coordination.state == "completed"
    assert coordination.metadata == {
        "method": "tick",
        "every": 2.0,
        "till": "enough",
        "timeout": 3600.0,
        "on_error": "continue",
        "start_at": iso(start),
        "last_execution_at": iso(ticks[-1]),
        "next_execution_at": None,
    }
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["runs"] == 3 and wf.next_run_at is None
    assert chrono_forge_env.pending == []
    assert ww.CALLS["after"] == 1
    # till is checked right after each tick: the workflow went on at the third tick, not one
    # interval later
    assert wf.completed_at == ticks[-1]


def test_method_receives_the_scheduled_time(chrono_forge_env):
    # 67: an optional positional parameter gets the scheduled time, an aware datetime.
    start = chrono_forge_env.now
    ww.Repeater.perform_later("r", every=2, limit=2)
    chrono_forge_env.run_all()
    assert ww.TICKS == [start, start + timedelta(seconds=2)]
    assert all(isinstance(t, datetime) and t.tzinfo is not None for t in ww.TICKS)


def test_zero_argument_method_is_called_bare(chrono_forge_env):
    # 67
    wf = ww.Repeater.perform_later("r", method="tick_bare", every=2, limit=2)
    chrono_forge_env.run_all()
    assert ww.TICKS == [None, None] and refresh(wf).state == "completed"


def test_optional_extra_parameter_keeps_its_default(chrono_forge_env):
    # 68
    start = chrono_forge_env.now
    ww.Repeater.perform_later("r", method="tick_extra", every=2, limit=1)
    chrono_forge_env.run_all()
    assert ww.TICKS == [start] and ww.FLAGS["extra"] == "default_value"


def test_custom_name(chrono_forge_env):
    # 69
    wf = ww.Repeater.perform_later("r", every=2, limit=2, name="my_custom_task")
    chrono_forge_env.run_all()
    names = list(wf.execution_logs.values_list("step_name", flat=True))
    assert "durably_repeat$my_custom_task" in names
    assert len([n for n in names if n.startswith("durably_repeat$my_custom_task$")]) == 2
    assert not [n for n in names if n.startswith("durably_repeat$tick")]


@pytest.mark.parametrize("till", ["callable", "bound"])
def test_till_as_callable_of_the_context_or_bound_method(chrono_forge_env, till):
    # 71
    wf = ww.Repeater.perform_later("r", every=1, limit=5, till=till)
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["runs"] == 5
    assert log(wf, "durably_repeat$tick").metadata["till"] == (
        "enough" if till == "bound" else "Repeater.perform.<locals>.<lambda>"
    )


def test_till_already_true_completes_without_running(chrono_forge_env):
    wf = ww.Repeater.perform_later("r", every=1, limit=0)
    assert chrono_forge_env.run_all() == 1
    assert refresh(wf).state == "completed" and ww.TICKS == []
    assert log(wf, "durably_repeat$tick").state == "completed" and repetitions(wf) == []


# -- start_at and the window -----------------------------------------------------------------------


def test_future_start_at(chrono_forge_env):
    # 72: nothing before start_at (and no early repetition row); then the first tick is start_at
    # itself.
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=2, limit=2, start_offset=3)
    chrono_forge_env.run_due()
    assert ww.TICKS == [] and repetitions(wf) == []
    assert refresh(wf).next_run_at == start + timedelta(seconds=3)
    chrono_forge_env.advance(timedelta(seconds=2))
    ww.Repeater.perform_later(
        "r"
    )  # an early wake-up: the replay computes another start_at, ignored
    chrono_forge_env.run_due()
    assert ww.TICKS == []
    chrono_forge_env.run_all()
    assert ww.TICKS == [start + timedelta(seconds=3), start + timedelta(seconds=5)]
    assert repetitions(wf)[0].metadata["scheduled_for"] == iso(start + timedelta(seconds=3))


def test_past_start_at_runs_now_with_start_at_as_scheduled_time(chrono_forge_env):
    # 73
    start = chrono_forge_env.now
    ww.Repeater.perform_later("r", every=60, limit=1, start_offset=-5)
    assert chrono_forge_env.run_due() == 1
    assert ww.TICKS == [start - timedelta(seconds=5)]


def test_every_second_over_three_seconds_runs_a_bounded_number_of_times(chrono_forge_env):
    # 74: no runaway: 2..5 executions (here the ticks at 0, 1 and 2 s; at 3 s till is already true).
    start = chrono_forge_env.now
    ww.FLAGS["end"] = start + timedelta(seconds=3)
    wf = ww.Repeater.perform_later("r", every=1, till="clock")
    chrono_forge_env.run_all()
    assert 2 <= len(ww.TICKS) <= 5
    assert ww.TICKS == [start + timedelta(seconds=n) for n in range(3)]
    assert refresh(wf).state == "completed"


# -- errors ----------------------------------------------------------------------------------------


def test_on_error_continue_retries_a_tick_and_the_schedule_goes_on(chrono_forge_env):
    # 75: 2 failures then success -> error logs "Simulated failure", attempts >= 2, success >= 1.
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", method="flaky", every=60, limit=2)
    chrono_forge_env.run_all()
    errors = list(ErrorLog.objects.order_by("id"))
    assert [e.error_message for e in errors] == ["Simulated failure"] * 2
    first = repetitions(wf, "durably_repeat$flaky")[0]
    assert [e.step_name for e in errors] == [first.step_name] * 2 and [
        e.attempt for e in errors
    ] == [1, 2]
    assert (first.state, first.attempts) == ("completed", 3)
    assert ww.TICKS == [start, start + timedelta(seconds=60)]
    assert refresh(wf).state == "completed"


def test_on_error_continue_moves_past_a_tick_that_used_its_budget(chrono_forge_env):
    ww.FLAGS["failures"] = 3  # the step default allows 3 attempts: the first tick fails for good
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", method="flaky", every=60, limit=1)
    chrono_forge_env.run_all()
    reps = repetitions(wf, "durably_repeat$flaky")
    assert [(r.state, r.attempts) for r in reps] == [("failed", 3), ("completed", 1)]
    assert reps[0].error_class == "tests.workflows_waits.TransientError"
    assert ww.TICKS == [start + timedelta(seconds=60)]
    assert refresh(wf).state == "completed"


def test_on_error_fail_workflow_stalls(chrono_forge_env):
    # 76
    wf = ww.Repeater.perform_later("r", method="always_fails", every=60, on_error="fail_workflow")
    chrono_forge_env.run_all()
    assert refresh(wf).state == "stalled"
    assert ErrorLog.objects.count() == 3 and ww.CALLS["always_fails"] == 3
    assert not ErrorLog.objects.filter(error_class__contains="ExecutionFailedError").exists()
    (rep,) = repetitions(wf, "durably_repeat$always_fails")
    assert (rep.state, rep.attempts) == ("failed", 3)
    assert log(wf, "durably_repeat$always_fails").state == "failed"
    assert chrono_forge_env.pending == []


def test_operator_retry_reruns_the_failed_tick_with_a_fresh_budget(chrono_forge_env, monkeypatch):
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later(
        "r", method="always_fails", every=60, on_error="fail_workflow", limit=1
    )
    chrono_forge_env.run_all()
    monkeypatch.setattr(ww.Repeater, "always_fails", lambda self: self.count())
    ww.Repeater.retry_now("r")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["runs"] == 1
    (rep,) = repetitions(wf, "durably_repeat$always_fails")
    assert (rep.state, rep.attempts) == ("completed", 1)
    assert rep.metadata["scheduled_for"] == iso(start)


def test_a_caught_fail_workflow_error_replays_without_running_again(chrono_forge_env):
    wf = ww.CaughtRepeatFailure.perform_later("r")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed"
    assert ww.CALLS["always_fails"] == 1
    assert (
        wf.context["caught"] == 2
    )  # the first pass and the replay after wait(5) both took the except branch


def test_per_call_retry_budget_is_honoured(chrono_forge_env):
    # 77: max_attempts=5 with on_error continue -> 5 failures observed on the tick.
    ww.FLAGS["failures"] = 5
    wf = ww.Repeater.perform_later("r", method="flaky", every=60, limit=1, policy=5)
    chrono_forge_env.run_all()
    assert ww.CALLS["flaky"] >= 6 and ErrorLog.objects.count() == 5
    first = repetitions(wf, "durably_repeat$flaky")[0]
    assert (first.state, first.attempts) == ("failed", 5)
    assert refresh(wf).state == "completed"


def test_a_tick_retried_past_its_timeout_fails_as_timed_out(chrono_forge_env):
    # The retry comes after the tick's window closed (the workers were down): one per-tick timeout
    # row,
    # no summary (no tick was skipped unseen), and the schedule goes on.
    ww.FLAGS["failures"] = 1
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", method="flaky", every=60, limit=1, timeout=30)
    chrono_forge_env.run_due()  # the first attempt fails; its retry is due within a second
    chrono_forge_env.advance(timedelta(seconds=45))
    chrono_forge_env.run_all()
    reps = repetitions(wf, "durably_repeat$flaky")
    assert [(r.state, r.error_class, r.metadata["scheduled_for"]) for r in reps] == [
        ("failed", "TimeoutError", iso(start)),
        ("completed", "", iso(start + timedelta(seconds=60))),
    ]
    assert summaries(wf) == []
    assert ww.TICKS == [start + timedelta(seconds=60)]
    assert refresh(wf).state == "completed"


# -- missed ticks ----------------------------------------------------------------------------------


def test_negative_timeout_skips_every_tick_with_summary_rows_only(chrono_forge_env):
    # 78: no per-tick timeout rows, >= 1 summary row with metadata.fast_forwarded.
    start = chrono_forge_env.now
    ww.FLAGS["end"] = start + timedelta(seconds=5)
    wf = ww.Repeater.perform_later("r", every=1, timeout=-1, till="clock")
    chrono_forge_env.run_all()
    assert timed_out_ticks(wf) == []
    rows = summaries(wf)
    assert rows and all(r.metadata["fast_forwarded"] >= 1 and r.state == "failed" for r in rows)
    assert ww.TICKS == []
    assert refresh(wf).state == "completed"


def test_fast_forward_updates_the_coordination_log(chrono_forge_env):
    # 79: on fast-forward last_executed_at changes and metadata.last_execution_at moves.
    wf = ww.Repeater.perform_later("r", every=1, timeout=1, limit=3)
    chrono_forge_env.run_due()
    before = log(wf, "durably_repeat$tick")
    chrono_forge_env.advance(timedelta(minutes=10))
    chrono_forge_env.run_due()
    after = log(wf, "durably_repeat$tick")
    assert after.last_executed_at != before.last_executed_at
    assert after.metadata["last_execution_at"] != before.metadata["last_execution_at"]
    assert len(summaries(wf)) == 1


def test_success_updates_the_coordination_log(chrono_forge_env):
    # 80
    wf = ww.Repeater.perform_later("r", every=2, limit=3)
    chrono_forge_env.run_due()
    before = log(wf, "durably_repeat$tick")
    chrono_forge_env.advance(timedelta(seconds=2))
    chrono_forge_env.run_due()
    after = log(wf, "durably_repeat$tick")
    assert after.last_executed_at > before.last_executed_at
    assert after.metadata["last_execution_at"] > before.metadata["last_execution_at"]


def test_dormant_start_skips_missed_ticks_in_one_summary_row(chrono_forge_env):
    # 81: start_at = now-60s, every 1 s, timeout 1 s -> 0 per-tick rows, exactly 1 summary row;
    # the first tick still in its window runs, and the workflow completes.
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=1, timeout=1, limit=2, start_offset=-60)
    chrono_forge_env.run_all()
    assert timed_out_ticks(wf) == []
    (summary,) = summaries(wf)
    assert summary.metadata == {
        "scheduled_for": iso(start - timedelta(seconds=60)),
        "parent_id": log(wf, "durably_repeat$tick").pk,
        "fast_forwarded": 59,
        "skipped_from": iso(start - timedelta(seconds=60)),
        "skipped_to": iso(start - timedelta(seconds=2)),
    }
    assert (summary.state, summary.error_class) == ("failed", "TimeoutError")
    assert (
        summary.step_name
        == f"durably_repeat$tick${int((start - timedelta(seconds=60)).timestamp())}"
    )
    assert ww.TICKS[0] == start - timedelta(seconds=1)  # on the grid, inside its 1 s window
    assert refresh(wf).state == "completed"


def test_fast_forward_unit_future_tick_unchanged():
    # 82
    now = datetime(2026, 5, 15, tzinfo=UTC)
    due = now + timedelta(seconds=30)
    assert fast_forward(due, timedelta(seconds=1), now - timedelta(seconds=1)) == (due, 0)


def test_fast_forward_unit_closed_form_stays_on_the_grid():
    # 83
    now = datetime(2026, 5, 15, 8, 0, 0, 250000, tzinfo=UTC)
    every, timeout = timedelta(seconds=1), timedelta(seconds=1)
    due = now - timedelta(seconds=60)
    cutoff = now - timeout
    result, skipped = fast_forward(due, every, cutoff)
    assert (result - due) % every == timedelta(0) and result == due + skipped * every
    assert result >= cutoff and result - every < cutoff
    assert skipped == 59
    # non-integral ratios round up onto the grid
    assert fast_forward(due, timedelta(seconds=7), cutoff) == (due + 9 * timedelta(seconds=7), 9)


def test_fast_forward_integration_coordination_and_single_summary(chrono_forge_env):
    # 83: coordination last_execution_at == result - every; exactly 1 row matches
    # durably_repeat$x$%.
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=1, timeout=1, limit=1, start_offset=-60, name="x")
    chrono_forge_env.run_all()
    ran = ww.TICKS[0]
    coordination = log(wf, "durably_repeat$x")
    assert ran >= start - timedelta(seconds=1) and ran - timedelta(seconds=1) < start - timedelta(
        seconds=1
    )
    (summary,) = [r for r in repetitions(wf, "durably_repeat$x") if r.error_class == "TimeoutError"]
    assert summary.metadata["fast_forwarded"] >= 1
    assert summary.metadata["skipped_to"] == iso(ran - timedelta(seconds=1))
    assert coordination.metadata["last_execution_at"] == iso(
        ran
    )  # then the tick itself ran and completed
    assert len(repetitions(wf, "durably_repeat$x")) == 2  # the summary and the tick that ran


def test_daily_grid(chrono_forge_env):
    # 85: now 2026-03-20 12:00, from Mar 1 12:00, every day, timeout 1 day -> Mar 19 12:00.
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    assert fast_forward(
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC), timedelta(days=1), now - timedelta(days=1)
    ) == (datetime(2026, 3, 19, 12, 0, tzinfo=UTC), 18)
    chrono_forge_env.travel_to(now)
    wf = ww.Repeater.perform_later(
        "r", every=86400, timeout=86400, limit=1, start_offset=-19 * 86400
    )
    chrono_forge_env.run_all()
    assert ww.TICKS == [datetime(2026, 3, 19, 12, 0, tzinfo=UTC)]
    assert summaries(wf)[0].metadata["fast_forwarded"] == 18


def test_pruned_repetitions_are_never_re_executed(chrono_forge_env):
    # 86: run 6 ticks every 1 s; after 2, delete every repetition behind the frontier (what a prune
    # with
    # a 0 s window removes); the run still gives 6 unique ticks and the executed prefix is
    # unchanged.
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=1, limit=6)
    chrono_forge_env.run_due()
    chrono_forge_env.advance(timedelta(seconds=1))
    chrono_forge_env.run_due()
    prefix = list(ww.TICKS)
    frontier = datetime.fromisoformat(log(wf, "durably_repeat$tick").metadata["last_execution_at"])
    prunable = [
        r.pk
        for r in repetitions(wf)
        if r.state == "completed" and datetime.fromisoformat(r.metadata["scheduled_for"]) < frontier
    ]
    assert len(prunable) >= 1
    ExecutionLog.objects.filter(pk__in=prunable).delete()
    assert ExecutionLog.objects.filter(workflow=wf, step_name="durably_repeat$tick").exists()
    chrono_forge_env.run_all()
    assert ww.TICKS[:2] == prefix
    assert ww.TICKS == [start + timedelta(seconds=n) for n in range(6)] and len(set(ww.TICKS)) == 6
    assert refresh(wf).state == "completed"


def test_one_year_dormancy_fast_forwards_in_one_pass_with_bounded_queries(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=1, timeout=1, limit=10)
    chrono_forge_env.run_due()
    counts = {}
    for dormancy in (timedelta(minutes=1), timedelta(days=365)):
        # off the grid by half a second, so the tick after the one that runs is not due yet
        chrono_forge_env.travel_to(
            start + timedelta(seconds=60.5) + (dormancy if dormancy.days else timedelta(0))
        )
        with capture() as queries:
            assert (
                chrono_forge_env.run_due() == 1
            )  # one pass: skip, then run the first tick in its window
        counts[dormancy] = len(data_statements(queries))
    assert counts[timedelta(minutes=1)] == counts[timedelta(days=365)]
    assert counts[timedelta(days=365)] == PINNED_DORMANCY_QUERIES
    minute, year = summaries(wf)
    assert minute.metadata["fast_forwarded"] == 59
    assert year.metadata["fast_forwarded"] == 365 * 86400 - 1
    assert ww.TICKS == [
        start,
        start + timedelta(seconds=60),
        start + timedelta(days=365, seconds=60),
    ]
    wf = refresh(wf)
    assert wf.context["runs"] == 3 and wf.next_run_at == start + timedelta(days=365, seconds=61)


# lock (SELECT FOR UPDATE + UPDATE) · bulk log read · repetition SELECT · summary INSERT +
# coordination
# UPDATE (one transaction) · tick INSERT · tick UPDATE · coordination UPDATE · release (context +
# lock UPDATE)
PINNED_DORMANCY_QUERIES = 10


# -- the bulk read ---------------------------------------------------------------------------------


def test_first_repetition_has_no_attempt_only_update(chrono_forge_env):
    # coordination and first repetition record their first attempt in the INSERT.
    wf = ww.Repeater.perform_later("r", every=60, limit=5)
    with capture() as first:
        chrono_forge_env.run_due()
    assert len(statements(first, "INSERT")) == 2 and attempt_updates(first) == []
    ww.FLAGS["failures"] = 1
    ww2 = ww.Repeater.perform_later("r2", method="flaky", every=60, limit=5)
    chrono_forge_env.run_due()
    with capture() as retry:
        chrono_forge_env.run_all()
    assert len(attempt_updates(retry)) >= 1  # the retry of an existing repetition bumps attempts
    assert refresh(ww2).state == "completed" and log(wf, "durably_repeat$tick").attempts == 1


def test_repetition_logs_stay_out_of_the_bulk_read(chrono_forge_env):
    # the coordination log is in, repetitions are not.
    wf = ww.Repeater.perform_later("r", every=1, limit=3)
    chrono_forge_env.run_all()
    names = StepLogs(wf.pk).names()
    assert "durably_repeat$tick" in names
    assert len(repetitions(wf)) == 3 and not [
        n for n in names if n.startswith("durably_repeat$tick$")
    ]


def test_next_run_at_tracks_the_next_tick_and_retries(chrono_forge_env):
    start = chrono_forge_env.now
    ww.FLAGS["failures"] = 1
    wf = ww.Repeater.perform_later("r", method="flaky", every=60, limit=2)
    chrono_forge_env.run_due()
    wf = refresh(wf)
    assert start < wf.next_run_at <= start + timedelta(seconds=1)  # the retry backoff
    chrono_forge_env.travel_to(wf.next_run_at)
    chrono_forge_env.run_due()
    assert refresh(wf).next_run_at == start + timedelta(seconds=60)
    assert [run.run_at for run in chrono_forge_env.pending] == [start + timedelta(seconds=60)]


def test_crash_after_a_tick_before_the_schedule_moved_does_not_rerun_it(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ww.Repeater.perform_later("r", every=60, limit=2)
    chrono_forge_env.run_due()
    # Simulate a pass that died after completing the tick but before moving the schedule on.
    coordination = log(wf, "durably_repeat$tick")
    metadata = dict(coordination.metadata, last_execution_at=None, next_execution_at=iso(start))
    ExecutionLog.objects.filter(pk=coordination.pk).update(metadata=metadata)
    ww.Repeater.perform_later("r")
    chrono_forge_env.run_all()
    assert ww.TICKS == [start, start + timedelta(seconds=60)]
    assert refresh(wf).state == "completed"


def test_operator_retry_leaves_repetition_history_alone(chrono_forge_env, monkeypatch):
    # A failed tick (on_error="continue") and a summary row are history: an operator retry of the
    # workflow (stalled later, on another step) resets only the failed non-repetition steps.
    ww.FLAGS["failures"] = 3

    def broken_after(self):
        raise ww.TransientError("after is broken")

    monkeypatch.setattr(ww.Repeater, "after", broken_after)
    wf = ww.Repeater.perform_later("r", method="flaky", every=60, limit=1, timeout=30)
    chrono_forge_env.run_due()
    chrono_forge_env.advance(timedelta(minutes=10))  # the first tick's retries come too late
    chrono_forge_env.run_all()
    assert refresh(wf).state == "stalled"
    before = {
        r.step_name: (r.state, r.attempts, r.error_class)
        for r in repetitions(wf, "durably_repeat$flaky")
    }
    assert sorted(state for state, _, _ in before.values()) == ["completed", "failed", "failed"]
    monkeypatch.setattr(ww.Repeater, "after", lambda self: None)
    ww.Repeater.retry_now("r")
    after = {
        r.step_name: (r.state, r.attempts, r.error_class)
        for r in repetitions(wf, "durably_repeat$flaky")
    }
    assert after == before
    assert refresh(wf).state == "completed"
