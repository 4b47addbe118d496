"""A run cancelled by its deadline is cancelled like any other: its ``on_cancel`` hook runs once,
with the reason ``deadline exceeded``, whether the sweep cancelled it while it waited or a running
pass stopped at its next boundary past the deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chrono_forge import deadlines, maintenance
from chrono_forge.models import Workflow
from tests import workflows_on_cancel as oc

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


def hook_step(key: str) -> str:
    return (
        Workflow.objects.get(key=key)
        .execution_logs.get(step_name__startswith="$workflow_on_cancel$")
        .state
    )


def test_the_sweep_cancelling_a_waiting_run_at_its_deadline_runs_its_hook_once(chrono_forge_env):
    oc.BoundedReserve.perform_later("swept", wait=3 * 3600)  # waits longer than its deadline
    chrono_forge_env.run_due()
    assert Workflow.objects.get(key="swept").state == "idle"
    chrono_forge_env.advance(HOUR)
    maintenance.resume_overdue()  # cancels it: the hook is due and enqueued
    chrono_forge_env.run_all()  # the hook, then the wait's late continuation (nothing runs)
    wf = Workflow.objects.get(key="swept")
    assert (wf.state, wf.cancel_reason) == ("cancelled", deadlines.DEADLINE_REASON)
    assert (oc.calls("hook"), oc.REASONS) == (1, [("swept", deadlines.DEADLINE_REASON)])
    assert hook_step("swept") == "completed" and oc.calls("ship") == 0
    assert (wf.next_run_at, wf.parked_on) == (None, None)  # nothing left scheduled
    maintenance.resume_overdue()
    chrono_forge_env.run_all()
    assert oc.calls("hook") == 1


def test_a_pass_stopping_past_its_deadline_runs_the_hook_after_its_release(
    chrono_forge_env, monkeypatch
):
    reserve = oc.BoundedReserve.reserve

    def an_hour_long(self):  # the clock passes the deadline inside the first step's body
        chrono_forge_env.advance(HOUR)
        return reserve(self)

    monkeypatch.setattr(oc.BoundedReserve, "reserve", an_hour_long)
    oc.BoundedReserve.perform_later("late", wait=0)
    chrono_forge_env.run_all()  # stops before ship, cancels, releases; then the hook's delivery
    wf = Workflow.objects.get(key="late")
    assert (wf.state, wf.cancel_reason, wf.locked_by) == (
        "cancelled",
        deadlines.DEADLINE_REASON,
        None,
    )
    assert (oc.calls("reserve"), oc.calls("ship"), oc.calls("hook")) == (1, 0, 1)
    assert hook_step("late") == "completed"
