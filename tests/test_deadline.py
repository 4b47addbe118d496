"""Workflow deadlines: the class attribute and the per-run option (validation before anything is
stored), ``deadline_at`` set by the first pass and inherited by branch children, the sweep that
cancels runs parked on an event, a message or a merge, a running pass stopping at its next
boundary, a delivery arriving after the deadline, and a forced retry restarting the clock."""

from __future__ import annotations

import io
import math
from datetime import timedelta

import pytest
from django.core.management import call_command

from chrono_forge import DurableWorkflow, deadlines, maintenance
from chrono_forge.exceptions import DeadlineExceeded
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_deadline as wd

pytestmark = pytest.mark.django_db

DEADLINE_ERROR = f"{DeadlineExceeded.__module__}.{DeadlineExceeded.__qualname__}"


def row(key: str) -> Workflow:
    return Workflow.objects.get(key=key)


def deadline_errors(key: str) -> list[tuple[str | None, str]]:
    return list(
        ErrorLog.objects.filter(workflow__key=key, error_class=DEADLINE_ERROR).values_list(
            "step_name", "error_message"
        )
    )


def assert_cancelled_by_deadline(key: str, reason: str = deadlines.DEADLINE_REASON) -> Workflow:
    wf = row(key)
    assert (wf.state, wf.cancel_reason) == ("cancelled", reason)
    assert (wf.next_run_at, wf.parked_on, wf.locked_by) == (None, None, None)
    if reason == deadlines.DEADLINE_REASON:
        [(step, message)] = deadline_errors(key)
        assert step is None  # a workflow-level entry, not a step's
        assert "deadline" in message and key in message
    return wf


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, error, match",
    [
        (timedelta(0), ValueError, "positive"),
        (timedelta(seconds=-5), ValueError, "positive"),
        (timedelta(days=365 * 200), ValueError, "at most"),
        (3600, TypeError, "timedelta or None"),
        (True, TypeError, "timedelta or None"),
        ("1h", TypeError, "timedelta or None"),
    ],
)
def test_a_bad_class_deadline_fails_when_the_class_is_defined(value, error, match):
    with pytest.raises(error, match=match) as raised:

        class Bad(DurableWorkflow):
            deadline = value

            def perform(self) -> None:
                pass

    assert "Bad.deadline" in str(raised.value)


def test_a_good_class_deadline_and_none_are_accepted():
    class Weekly(DurableWorkflow):
        deadline = timedelta(days=7)

        def perform(self) -> None:
            pass

    class Unbounded(wd.Parked):
        deadline = None

    assert (Weekly.deadline, Unbounded.deadline) == (timedelta(days=7), None)


@pytest.mark.parametrize(
    "value, error, match",
    [
        (0, ValueError, "positive"),
        (-1.5, ValueError, "positive"),
        (math.nan, ValueError, "finite"),
        (math.inf, ValueError, "finite"),
        (10**12, ValueError, "at most"),
        (True, TypeError, "timedelta, a number of seconds or None"),
        ("60", TypeError, "timedelta, a number of seconds or None"),
        ([60], TypeError, "timedelta, a number of seconds or None"),
    ],
)
def test_a_bad_deadline_option_is_refused_before_anything_is_stored(
    chrono_forge_env, value, error, match
):
    with pytest.raises(error, match=match) as raised:
        wd.Parked.perform_later("bad", options={"deadline": value})
    assert 'options["deadline"]' in str(raised.value)
    with pytest.raises(error):
        wd.Parked.perform_now("bad", options={"deadline": value})
    assert not Workflow.objects.exists()
    assert chrono_forge_env.pending == []


def test_the_deadline_option_is_stored_in_seconds(chrono_forge_env):
    wd.Parked.perform_later("td", options={"deadline": timedelta(minutes=5)})
    wd.Parked.perform_later("secs", options={"deadline": 90})
    wd.Parked.perform_later("none", options={"deadline": None})
    assert row("td").options == {"deadline": 300.0}
    assert row("secs").options == {"deadline": 90.0}
    assert row("none").options == {"deadline": None}


# -- deadline_at -----------------------------------------------------------------------------------
def test_deadline_at_is_set_by_the_first_pass_and_never_moves(chrono_forge_env):
    wd.Slow.perform_later("first", wait=600)
    assert row("first").deadline_at is None  # it counts from the first pass, not the enqueue
    chrono_forge_env.advance(30)
    chrono_forge_env.run_due()
    wf = row("first")
    assert wf.started_at == chrono_forge_env.now
    assert wf.deadline_at == wf.started_at + wd.HOUR
    chrono_forge_env.run_all()  # the wait's continuation: a later pass
    wf = row("first")
    assert wf.state == "completed"
    assert wf.deadline_at == wf.started_at + wd.HOUR


def test_the_option_overrides_the_class_deadline_or_removes_it(chrono_forge_env):
    wd.Parked.perform_later("short", options={"deadline": 60})
    wd.Parked.perform_later("none", options={"deadline": None})
    wd.Unbounded.perform_later("own", options={"deadline": timedelta(hours=2)}, wait=10)
    wd.Unbounded.perform_later("plain")
    chrono_forge_env.run_due()
    now = chrono_forge_env.now
    assert row("short").deadline_at == now + timedelta(seconds=60)
    assert row("none").deadline_at is None
    assert row("own").deadline_at == now + timedelta(hours=2)
    assert row("plain").deadline_at is None


def test_branch_children_inherit_the_parents_deadline_unless_their_class_sets_one(
    chrono_forge_env,
):
    wd.Parent.perform_later("p", children=2)
    chrono_forge_env.run_due()
    parent = row("p")
    assert parent.deadline_at == parent.started_at + wd.HOUR
    for key in ("p$kids$child_0", "p$kids$child_1"):
        assert row(key).deadline_at == parent.deadline_at  # stored at spawn, kept by its pass
    short = row("p$kids$short")
    assert short.started_at is not None
    assert short.deadline_at == short.started_at + timedelta(minutes=10)


def test_children_of_a_parent_without_a_deadline_have_only_their_own(chrono_forge_env):
    wd.UnboundedParent.perform_later("u", children=1)
    chrono_forge_env.run_due()
    assert row("u").deadline_at is None
    assert row("u$kids$child_0").deadline_at is None
    short = row("u$kids$short")
    assert short.deadline_at == short.started_at + timedelta(minutes=10)


# -- the sweep -------------------------------------------------------------------------------------
def test_a_run_parked_on_an_event_is_cancelled_by_the_sweep_at_its_deadline(chrono_forge_env):
    wd.Parked.perform_later("gate")
    chrono_forge_env.run_all()
    assert row("gate").parked_on == "continue_if$gate"
    chrono_forge_env.advance(wd.HOUR - timedelta(seconds=1))
    assert maintenance.resume_overdue() == 0
    assert row("gate").state == "idle"  # not yet
    chrono_forge_env.advance(1)
    assert Workflow.objects.past_deadline().filter(key="gate").exists()
    maintenance.resume_overdue()
    assert_cancelled_by_deadline("gate")
    wd.FLAGS["open"] = True
    wd.Parked.perform_later("gate")  # the event arrives after all: nothing runs
    chrono_forge_env.run_all()
    assert (wd.calls("open"), wd.calls("after")) == (1, 0)
    assert Workflow.objects.cancel_past_deadline() == 0  # a second sweep adds no entry
    assert len(deadline_errors("gate")) == 1


def test_a_run_parked_on_a_message_is_cancelled_by_the_command_sweep(chrono_forge_env):
    wd.Receiver.perform_later("rcv")
    chrono_forge_env.run_all()
    assert row("rcv").parked_on == "receive$go"
    chrono_forge_env.advance(wd.HOUR)
    out = io.StringIO()
    call_command("chrono_forge", "resume-overdue", stdout=out, stderr=io.StringIO())
    assert "Cancelled 1 workflow(s) past their deadline" in out.getvalue()
    assert_cancelled_by_deadline("rcv")
    shown = io.StringIO()
    call_command("chrono_forge", "show", "rcv", stdout=shown, no_color=True)
    assert "deadline:" in shown.getvalue() and "deadline exceeded" in shown.getvalue()


def test_a_parent_waiting_on_a_merge_is_cancelled_with_its_children(chrono_forge_env):
    wd.Parent.perform_later("m", children=3)
    chrono_forge_env.run_due()
    assert row("m").state == "idle" and row("m").next_run_at is not None  # the merge's poll
    chrono_forge_env.advance(timedelta(minutes=10))
    # the short child's own deadline passed first: it alone is cancelled
    assert Workflow.objects.cancel_past_deadline() == 1
    assert_cancelled_by_deadline("m$kids$short")
    assert row("m").state == "idle"
    chrono_forge_env.advance(wd.HOUR)
    cancelled = Workflow.objects.cancel_past_deadline()
    assert cancelled == 4  # the parent and its three children: they share its deadline
    assert_cancelled_by_deadline("m")
    for index in range(3):
        assert_cancelled_by_deadline(f"m$kids$child_{index}")
    chrono_forge_env.run_all()  # the merge poller finds the parent cancelled and stops
    assert wd.calls("after_merge") == 0
    assert chrono_forge_env.pending == []


def test_descendants_without_the_deadline_get_the_parents_reason(chrono_forge_env):
    wd.Parked.perform_later("solo")
    wd.Parent.perform_later("kin", children=1)
    chrono_forge_env.run_due()
    # the child left the parent's deadline behind (an older row, say): the cascade cancels it
    Workflow.objects.filter(key="kin$kids$child_0").update(deadline_at=None)
    chrono_forge_env.advance(wd.HOUR)
    assert Workflow.objects.filter(key="kin").cancel_past_deadline() == 1
    assert_cancelled_by_deadline("kin")
    assert_cancelled_by_deadline("kin$kids$child_0", reason="parent cancelled: deadline exceeded")
    assert not deadline_errors("kin$kids$child_0")
    assert row("solo").state == "idle"  # outside the queryset


def test_a_stalled_run_past_its_deadline_is_cancelled(chrono_forge_env):
    wd.Broken.perform_later("stalled")
    chrono_forge_env.run_all()
    assert row("stalled").state == "stalled"
    chrono_forge_env.advance(wd.HOUR)
    assert Workflow.objects.cancel_past_deadline() == 1
    assert_cancelled_by_deadline("stalled")


def test_finished_runs_and_runs_without_a_deadline_are_left_alone(chrono_forge_env):
    wd.Slow.perform_later("done")
    wd.Unbounded.perform_later("free", wait=7200)
    chrono_forge_env.run_due()
    assert row("done").state == "completed"
    chrono_forge_env.advance(wd.HOUR * 2)
    assert not Workflow.objects.past_deadline().exists()
    assert Workflow.objects.cancel_past_deadline() == 0
    assert row("done").state == "completed"
    assert not ErrorLog.objects.exists()


# -- a pass --------------------------------------------------------------------------------------
def test_a_running_pass_past_its_deadline_stops_at_the_next_boundary(chrono_forge_env):
    wd.FLAGS["in_first"] = lambda: chrono_forge_env.advance(wd.HOUR)  # the body takes an hour
    wd.Slow.perform_later("long")
    chrono_forge_env.run_all()
    assert (wd.calls("first"), wd.calls("second")) == (1, 0)
    assert_cancelled_by_deadline("long")
    first = ExecutionLog.objects.get(workflow__key="long", step_name="durably_execute$first")
    assert (first.state, first.result) == ("completed", 1)  # committed with the unlock
    assert not ExecutionLog.objects.filter(
        workflow__key="long", step_name="durably_execute$second"
    ).exists()
    assert chrono_forge_env.pending == []


def test_a_pass_delivered_after_the_deadline_cancels_instead_of_running(chrono_forge_env):
    wd.Slow.perform_later("late", wait=2 * 3600)  # the wait ends after the deadline
    chrono_forge_env.run_due()
    assert row("late").next_run_at == chrono_forge_env.now + timedelta(hours=2)
    chrono_forge_env.run_all()  # no sweep ran: the continuation itself finds the deadline passed
    assert (wd.calls("first"), wd.calls("second")) == (1, 0)
    assert_cancelled_by_deadline("late")
    assert not ExecutionLog.objects.filter(
        workflow__key="late", step_name="durably_execute$second"
    ).exists()


def test_a_pass_delivered_after_the_deadline_runs_no_code_even_with_nothing_left_but_returning(
    chrono_forge_env,
):
    wd.WaitThenReturn.perform_later("ret", wait=2 * 3600)
    chrono_forge_env.run_all()
    assert wd.calls("perform") == 1  # the late pass cancelled before replaying perform()
    assert_cancelled_by_deadline("ret")
    assert row("ret").result is None
    assert not ExecutionLog.objects.filter(workflow__key="ret", step_name__contains="completion")


def test_a_forced_retry_of_a_run_cancelled_by_its_deadline_restarts_the_clock(chrono_forge_env):
    wd.Slow.perform_later("again", wait=2 * 3600)
    chrono_forge_env.run_all()
    assert_cancelled_by_deadline("again")
    wd.Slow.retry_later("again", resume_cancelled=True)
    chrono_forge_env.run_all()
    wf = row("again")
    assert wf.state == "completed"
    assert wf.deadline_at == chrono_forge_env.now + wd.HOUR  # counted from the retry's pass
    assert (wd.calls("first"), wd.calls("second")) == (1, 1)


# -- faults ----------------------------------------------------------------------------------------
def test_a_lost_continuation_past_the_deadline_is_cancelled_not_re_sent(chrono_forge_env):
    wd.Slow.perform_later("lost", wait=2 * 3600)
    chrono_forge_env.run_due()
    assert chrono_forge_env.drop_pending() == 1  # the broker loses the wait's continuation
    chrono_forge_env.advance(timedelta(hours=3))
    assert Workflow.objects.overdue().filter(key="lost").exists()
    assert maintenance.resume_overdue() == 0  # cancelled first, so nothing is overdue any more
    assert_cancelled_by_deadline("lost")
    assert chrono_forge_env.pending == []
    assert wd.calls("second") == 0


def test_a_run_whose_worker_died_past_its_deadline_is_cancelled_by_the_sweep(chrono_forge_env):
    wd.Slow.perform_later("dead", wait=600)
    chrono_forge_env.run_due()
    chrono_forge_env.drop_pending()
    # the worker of its next pass died holding the lock (as a SIGKILL leaves it)
    Workflow.objects.filter(key="dead").update(
        state="running", locked_by="dead-worker", locked_at=chrono_forge_env.now
    )
    chrono_forge_env.advance(wd.HOUR)
    assert Workflow.objects.cancel_past_deadline() == 1
    wf = row("dead")
    assert (wf.state, wf.cancel_reason) == ("cancelled", deadlines.DEADLINE_REASON)
    assert len(deadline_errors("dead")) == 1
    chrono_forge_env.advance(wd.HOUR)
    assert not Workflow.objects.stranded().exists()  # nothing left for the reaper
    assert Workflow.objects.reap_stalled() == 0


def test_a_reaped_pass_past_the_deadline_cancels_instead_of_running(chrono_forge_env):
    wd.Slow.perform_later("reaped", wait=600)
    chrono_forge_env.run_due()
    chrono_forge_env.drop_pending()
    Workflow.objects.filter(key="reaped").update(
        state="running", locked_by="dead-worker", locked_at=chrono_forge_env.now
    )
    chrono_forge_env.advance(wd.HOUR)
    assert Workflow.objects.reap_stalled() == 1  # the reaper's delivery comes before any sweep
    chrono_forge_env.run_all()
    assert_cancelled_by_deadline("reaped")
    assert wd.calls("second") == 0


def test_crashes_at_every_boundary_leave_a_bounded_run_as_a_clean_one():
    from chrono_forge.testing import assert_crash_safe

    report = assert_crash_safe(wd.LongBounded, "crash", wait=600)
    assert report.clean[(wd.LongBounded.job_class(), "crash")]["state"] == "completed"


def test_the_workflow_page_shows_the_deadline(client, operator, chrono_forge_env):
    from django.urls import reverse

    wd.Parked.perform_later("page")
    chrono_forge_env.run_due()
    wf = row("page")
    html = client.get(reverse("admin:chrono_forge_workflow_change", args=[wf.pk])).content
    assert "<dt>Deadline</dt>" in html.decode()
