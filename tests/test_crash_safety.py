"""``chrono_forge.testing.assert_crash_safe``: a hard kill at every step boundary of the example
and test workflows recovers through the reaper and the overdue sweep, ending like a clean run; and
the helper does catch a workflow that is not crash safe, naming the boundary."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.test import override_settings

from chrono_forge.models import Workflow
from chrono_forge.testing import CrashTest, assert_crash_safe
from example_project.demo import workflows as demo
from tests import workflows_branches as wb
from tests import workflows_crash as wc
from tests import workflows_waits as ww

pytestmark = pytest.mark.django_db


# -- the example project's workflows ---------------------------------------------------------------
def parcel_context(context: dict) -> dict:
    """The parcel demo records its ticks' times, which an outage shifts: keep their count and their
    spacing (the grid), not where the grid starts."""
    ticks = [datetime.fromisoformat(t) for t in context.get("tracking_updates", [])]
    spacing = [
        (later - earlier).total_seconds() for earlier, later in zip(ticks, ticks[1:], strict=False)
    ]
    return {**context, "tracking_updates": (len(ticks), spacing)}


SAFE_DEMOS = [d for d in demo.DEMOS if d.workflow_class is not demo.ParcelDeliveryWorkflow]


@pytest.mark.parametrize("demo_run", SAFE_DEMOS, ids=lambda d: d.key)
def test_the_demo_workflows_are_crash_safe(demo_run):
    report = assert_crash_safe(demo_run.workflow_class, demo_run.key, **demo_run.kwargs)
    [(state, context)] = [(o["state"], o["context"]) for o in report.clean.values()]
    assert state == demo_run.expected_state
    assert len(report.boundaries) >= 2
    assert set(report.reruns.values()) <= {0, 1}
    assert not Workflow.objects.filter(key=demo_run.key).exists()  # cleaned up after itself


# The parcel demo waits at most a minute for its carrier, and recovery after a kill takes
# REAP_STALE_AFTER (3 x MAX_DURATION): model a deployment whose locks go stale in 5 s.
@override_settings(CHRONO_FORGE={"MAX_DURATION": 5})
def test_the_parcel_demo_loses_what_its_condition_wrote_when_killed_before_the_release():
    """What the helper finds in the parcel demo: a step's context writes are saved with the
    pass's release, not with the step's completion. Killed in between, the completed
    ``wait_until`` is not run again and its ``carrier_checks`` write is gone (the same holds for a
    ``durably_repeat`` tick counting in the context). Keying the effect outside the context (see
    ``Ticker``) is crash safe today; saving the context with each completion would cost one more
    UPDATE per such step."""
    test = CrashTest(
        demo.ParcelDeliveryWorkflow, "parcel", {"parcel_id": 1}, context=parcel_context
    )
    with pytest.raises(AssertionError) as info:
        test.assert_safe()
    assert str(info.value) == (
        "killed at boundary #9 (pass 3, ParcelDeliveryWorkflow(parcel): "
        "wait_until$carrier_has_parcel updated (attempts, completed_at, last_executed_at, "
        "metadata, state)): "
        "ParcelDeliveryWorkflow(parcel) context {'carrier_checks': 1, 'tracking_updates': "
        "(3, [1.0, 1.0])}, the uninterrupted run {'carrier_checks': 2, 'tracking_updates': "
        "(3, [1.0, 1.0])}"
    )


@override_settings(CHRONO_FORGE={"MAX_DURATION": 5})
def test_the_boundaries_cover_locks_step_writes_and_lost_continuations():
    # Every boundary before the one above recovers; the report lists them all.
    test = CrashTest(
        demo.ParcelDeliveryWorkflow, "parcel", {"parcel_id": 1}, context=parcel_context
    )
    killer, died = test.run(kill_at=None)
    assert died is None
    descriptions = [boundary.description for boundary in killer.seen]
    assert descriptions[0] == (
        "pass 1, ParcelDeliveryWorkflow(parcel): lock read, to be written with the pass's first "
        "write"
    )
    assert any(d.endswith(": lock taken") for d in descriptions)  # its later passes
    assert any("wait$cooling_off inserted" in d for d in descriptions)
    assert any("released, continuation not yet published" in d for d in descriptions)
    assert any("durably_repeat$send_tracking_update$" in d for d in descriptions)
    clean = test.outcome()
    for number in range(1, 9):
        test.run(kill_at=number)
        test.compare(killer.seen[number - 1], clean, test.outcome())


# -- a first pass's lock rides with its first write ------------------------------------------------
@pytest.mark.parametrize(
    "workflow_class,first_write",
    [
        (wc.ThreeWrites, "durably_execute$write_0 inserted"),
        (wc.NoStepsAtAll, "$workflow_completion$ inserted"),
        (wc.RaisesBeforeAnyStep, "lock taken"),  # the retry's pass, after the error and release
    ],
    ids=["steps", "no-step", "raises-first"],
)
def test_a_kill_before_or_after_a_first_pass_writes_its_lock_recovers(workflow_class, first_write):
    """A first pass reads the row and writes its lock with its first write (a step INSERT, the
    completion, or the error of a perform() that raised): killed after the read, nothing was
    written (the row is idle and due: the overdue sweep starts it); killed after that first
    write, the lock is held (the reaper takes it over). Both end like the clean run."""

    class Watched(CrashTest):
        """Notes what a kill left in the row, before the recovery."""

        def recover(self, env):
            self.left = Workflow.objects.values("state", "locked_by", "started_at").get()
            super().recover(env)

    test = Watched(workflow_class, "first")
    killer, died = test.run(kill_at=None)
    assert died is None
    descriptions = [boundary.description.split(": ", 1)[1] for boundary in killer.seen]
    assert descriptions[0] == "lock read, to be written with the pass's first write"
    assert any(d.startswith(first_write) for d in descriptions[1:])
    _, died = test.run(kill_at=1)
    assert died is not None
    # killed after the read: nothing of the pass was written; the row is idle and due
    assert test.left == {"state": "idle", "locked_by": None, "started_at": None}
    _, died = test.run(kill_at=2)
    assert died is not None and test.left["state"] in ("running", "idle", "failed")
    if test.left["state"] == "running":  # killed after the first write: the lock is held
        assert test.left["locked_by"] is not None and test.left["started_at"] is not None
    report = test.assert_safe()
    assert len(report.boundaries) == len(descriptions)


# -- primitives ----------------------------------------------------------------------------------
def test_a_durable_wait():
    report = assert_crash_safe(ww.WaitThenStep, "wait", seconds=600)
    assert report.clean[(ww.WaitThenStep.job_class(), "wait")]["state"] == "completed"


def test_a_continue_if_gate_parks_the_same_after_every_kill():
    report = assert_crash_safe(ww.Gate, "gate")
    assert report.clean[(ww.Gate.job_class(), "gate")]["state"] == "idle"


def test_durably_repeat():
    report = CrashTest(wc.Ticker, "ticks", before_each=wc.NOTIFIED.clear).assert_safe()
    clean = report.clean[(wc.Ticker.job_class(), "ticks")]
    assert clean["state"] == "completed"
    assert clean["steps"]["durably_execute$summary"]["result"] == {"ticks": 3}
    assert [name for name in clean["steps"] if name.startswith("durably_repeat$tick$")] == [
        "durably_repeat$tick$#1",
        "durably_repeat$tick$#2",
        "durably_repeat$tick$#3",
    ]


def test_a_branch_and_its_merge():
    report = assert_crash_safe(wb.TwoBranches, "fan")
    assert {key for _, key in report.clean} == {"fan", "fan$a$x", "fan$b$y", "fan$b$z"}
    assert {o["state"] for o in report.clean.values()} == {"completed"}
    # the children's passes are killed too, not only the parent's
    assert any("Leaf(fan$b$z)" in b.description for b in report.boundaries)


def test_an_automerged_branch():
    report = assert_crash_safe(wb.SpawnOne, "auto")
    assert report.clean[(wb.SpawnOne.job_class(), "auto")]["state"] == "completed"


# -- what it catches -------------------------------------------------------------------------------
def test_a_step_that_is_not_idempotent_is_caught_naming_the_boundary():
    with pytest.raises(AssertionError) as info:
        CrashTest(wc.DoubleCharge, "order", before_each=wc.LEDGER.clear).assert_safe()
    assert str(info.value) == (
        "killed at boundary #3 (pass 1, DoubleCharge(order): durably_execute$charge returned, "
        "completion not yet committed): DoubleCharge(order) context {'charges': 2}, the "
        "uninterrupted run {'charges': 1}"
    )


def test_the_idempotent_version_passes():
    report = CrashTest(wc.IdempotentCharge, "order", before_each=wc.LEDGER.clear).assert_safe()
    assert [str(boundary) for boundary in report.boundaries] == [
        "boundary #1 (pass 1, IdempotentCharge(order): lock read, to be written with the pass's "
        "first write)",
        "boundary #2 (pass 1, IdempotentCharge(order): durably_execute$charge inserted (pending))",
        "boundary #3 (pass 1, IdempotentCharge(order): durably_execute$charge returned, "
        "completion not yet committed)",
        "boundary #4 (pass 1, IdempotentCharge(order): durably_execute$receipt inserted (pending))",
        "boundary #5 (pass 1, IdempotentCharge(order): durably_execute$receipt returned, "
        "completion not yet committed)",
        "boundary #6 (pass 1, IdempotentCharge(order): $workflow_completion$ inserted (completed))",
    ]
    # a kill right after the lock re-runs nothing; any later one re-runs (or re-counts) one step
    assert report.reruns == {1: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}


def test_the_fixture_form(chrono_forge_crash_safe):
    report = chrono_forge_crash_safe(ww.WaitThenStep, "fixture", seconds=5)
    assert report.boundaries and set(report.reruns) == {b.number for b in report.boundaries}
