"""Cancellation: ``Cls.cancel``, ``workflow.cancel`` and ``QuerySet.cancel`` in each state, the
delivery that arrives after a cancel, a pass cancelled mid-run, branch children, merges held by a
cancelled child, the forced retry, the signal, and bad input."""

from __future__ import annotations

import pytest

from chrono_forge import signals, step_names
from chrono_forge.exceptions import WorkflowNotCancellableError, WorkflowNotRetryableError
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_cancel as wc
from tests.core_sql import EXECUTION_LOG, WORKFLOW, SqlLog

pytestmark = pytest.mark.django_db


def row(key: str) -> Workflow:
    return Workflow.objects.get(key=key)


def assert_cancelled(key: str, reason: str) -> Workflow:
    wf = row(key)
    assert wf.state == "cancelled", wf.state
    assert wf.cancel_reason == reason
    assert wf.cancelled_at is not None
    assert (wf.next_run_at, wf.parked_on, wf.locked_by, wf.completed_at) == (None,) * 4
    return wf


# -- each state ------------------------------------------------------------------------------------
def test_a_run_that_never_started_is_cancelled_and_its_first_delivery_finds_nothing(
    chrono_forge_env,
):
    wc.TwoSteps.perform_later("never")
    wf = wc.TwoSteps.cancel("never", reason="ordered by mistake")
    assert wf.state == "cancelled" and wf.cancel_reason == "ordered by mistake"
    assert chrono_forge_env.run_all() == 1  # the first delivery arrives and exits quietly
    assert_cancelled("never", "ordered by mistake")
    assert wc.calls("first") == 0
    assert not ExecutionLog.objects.filter(workflow__key="never").exists()


def test_a_scheduled_run_is_cancelled_and_its_continuation_exits_quietly(chrono_forge_env):
    wc.TwoSteps.perform_later("sched", wait=60)
    chrono_forge_env.run_due()
    assert row("sched").next_run_at is not None and len(chrono_forge_env.pending) == 1
    wc.TwoSteps.cancel("sched", reason="refunded")
    chrono_forge_env.run_all()  # the wait's continuation arrives after the cancel
    assert_cancelled("sched", "refunded")
    assert (wc.calls("first"), wc.calls("second")) == (1, 0)


def test_a_parked_run_is_cancelled_and_a_later_wake_up_runs_nothing(chrono_forge_env):
    wc.Gate.perform_later("parked")
    chrono_forge_env.run_all()
    assert row("parked").parked_on == "continue_if$gate"
    row("parked").cancel("no longer needed")
    wc.FLAGS["open"] = True
    wc.Gate.perform_later("parked")  # the event arrives after all
    chrono_forge_env.run_all()
    assert_cancelled("parked", "no longer needed")
    assert (wc.calls("open"), wc.calls("after")) == (1, 0)


def test_a_stalled_run_can_be_cancelled(chrono_forge_env):
    wc.Broken.perform_later("stalled")
    chrono_forge_env.run_all()
    assert row("stalled").state == "stalled"
    wc.Broken.cancel("stalled", reason="giving up")
    assert_cancelled("stalled", "giving up")


# -- a running pass --------------------------------------------------------------------------------
def test_a_pass_cancelled_mid_step_starts_no_further_step_and_releases_as_cancelled(
    chrono_forge_env,
):
    wc.FLAGS["cancel_in_first"] = "stop now"
    wc.TwoSteps.perform_later("mid")
    chrono_forge_env.run_all()
    assert (wc.calls("first"), wc.calls("second")) == (1, 0)
    assert_cancelled("mid", "stop now")
    first = ExecutionLog.objects.get(workflow__key="mid", step_name="durably_execute$first")
    assert first.state == "completed" and first.result == 1  # committed with the unlock
    assert not ExecutionLog.objects.filter(
        workflow__key="mid", step_name="durably_execute$second"
    ).exists()
    assert chrono_forge_env.pending == []  # nothing scheduled for a cancelled run


@pytest.mark.django_db(transaction=True)  # real commits: the cancel is committed on its own
@pytest.mark.parametrize("after", ["first", "second"])
def test_a_cancel_committed_right_after_a_step_finished_stops_the_next_body(
    chrono_forge_env, after
):
    """The check before the next body rides in the finished step's completed UPDATE (no SELECT of
    its own): a cancel committed between the step's return and that write halts the pass there.
    The finished steps still commit as completed (with the release), nothing of the next step is
    written, and nothing is scheduled."""
    wc.FLAGS["cancel_after"] = after
    wc.ThreeSteps.perform_later("between")
    with SqlLog() as sql:
        chrono_forge_env.run_all()
    ran = ["first", "second", "third"][: ["first", "second"].index(after) + 1]
    assert [name for name in ("first", "second", "third") if wc.calls(name)] == ran
    assert_cancelled("between", f"after {after}")
    logs = dict(
        ExecutionLog.objects.filter(workflow__key="between").values_list("step_name", "state")
    )
    assert logs == {f"durably_execute${name}": "completed" for name in ran}, logs
    assert chrono_forge_env.pending == []
    # the check was the finished step's conditional UPDATE and, as it matched nothing, one
    # SELECT telling why; no body that ran was preceded by a SELECT of the state
    statements = sql.data_statements
    checks = [
        i
        for i, s in enumerate(statements)
        if s.kind == "SELECT" and s.table == WORKFLOW and '"state" =' in s.sql.split(" WHERE ")[1]
    ]
    assert len(checks) == 1, sql.dump()
    folded = statements[checks[0] - 1]
    assert (folded.kind, folded.table) == ("UPDATE", EXECUTION_LOG), sql.dump()
    assert "NOT EXISTS" in folded.sql


@pytest.mark.django_db(transaction=True)
def test_a_cancel_before_a_receive_leaves_the_message_pending_and_the_step_completed(
    chrono_forge_env,
):
    """The check folded into a write inside the receive's own transaction: nothing of the receive
    is written (the message stays pending), and the finished step commits with the release."""
    wc.StepThenReceive.perform_later("receive")
    message = wc.StepThenReceive.send("receive", "note", {"n": 1})
    chrono_forge_env.run_all()
    assert_cancelled("receive", "before the receive")
    message.refresh_from_db()
    assert message.consumed_at is None
    logs = dict(
        ExecutionLog.objects.filter(workflow__key="receive").values_list("step_name", "state")
    )
    assert logs == {"durably_execute$first": "completed"}, logs
    assert "got" not in row("receive").context


def test_a_cancel_during_the_last_step_wins_over_the_completion(chrono_forge_env):
    wc.LastStepCancels.perform_later("last")
    chrono_forge_env.run_all()
    assert_cancelled("last", "during the last step")
    names = set(
        ExecutionLog.objects.filter(workflow__key="last").values_list("step_name", flat=True)
    )
    assert step_names.COMPLETION_MARKER not in names  # the completion rolled back
    only = ExecutionLog.objects.get(workflow__key="last", step_name="durably_execute$only")
    assert only.state == "completed" and only.result == "done"


def test_a_cancel_followed_by_an_error_keeps_the_run_cancelled_not_failed(chrono_forge_env):
    wc.FailsAfterCancel.perform_later("fails")
    chrono_forge_env.run_all()
    assert_cancelled("fails", "then it raised")
    names = ExecutionLog.objects.filter(workflow__key="fails").values_list("step_name", flat=True)
    assert not [n for n in names if n.startswith(step_names.FAILURE_MARKER_PREFIX)]


# -- finished runs and bad input -------------------------------------------------------------------
def test_a_finished_or_unknown_run_is_not_cancellable_and_says_its_state(chrono_forge_env):
    wc.Leaf.perform_later("done")
    chrono_forge_env.run_all()
    with pytest.raises(WorkflowNotCancellableError, match="is completed") as error:
        wc.Leaf.cancel("done")
    assert error.value.state == "completed"
    wc.Leaf.perform_later("twice")
    wc.Leaf.cancel("twice")
    with pytest.raises(WorkflowNotCancellableError, match="is cancelled") as error:
        row("twice").cancel()
    assert error.value.state == "cancelled"
    with pytest.raises(WorkflowNotCancellableError, match="does not exist") as error:
        wc.Leaf.cancel("nobody")
    assert error.value.state is None
    assert row("done").state == "completed"


@pytest.mark.parametrize(
    ("reason", "error", "match"),
    [
        (5, TypeError, "must be a str, got int"),
        (None, TypeError, "must be a str, got NoneType"),
        ("x" * 256, ValueError, "at most 255 characters, got 256"),
        ("a\x00b", ValueError, "NUL"),
    ],
    ids=["int", "none", "too-long", "nul"],
)
def test_a_bad_reason_is_refused_before_anything_is_stored(chrono_forge_env, reason, error, match):
    wc.TwoSteps.perform_later("bad")
    before = Workflow.objects.values().get(key="bad")
    with pytest.raises(error, match=match):
        wc.TwoSteps.cancel("bad", reason=reason)
    with pytest.raises(error, match=match):
        row("bad").cancel(reason)
    with pytest.raises(error, match=match):
        Workflow.objects.filter(key="bad").cancel(reason)
    assert Workflow.objects.values().get(key="bad") == before


def test_a_bad_key_is_refused():
    with pytest.raises(TypeError, match="workflow key must be a str"):
        wc.TwoSteps.cancel(123)


# -- branch children -------------------------------------------------------------------------------
def test_cancelling_a_parent_cancels_its_children_and_theirs(chrono_forge_env):
    wc.Parent.perform_now("p", children=3, middles=2)
    for index in range(2):  # the middles spawn their own leaves and wait on their merge
        wc.Middle._execute(f"p$kids$middle{index}")  # one pass of the child
    tree = Workflow.objects.filter(key__startswith="p$")
    assert tree.count() == 3 + 2 + 4
    wc.Parent.cancel("p", reason="shop closed")
    assert_cancelled("p", "shop closed")
    assert set(tree.values_list("state", flat=True)) == {"cancelled"}
    assert set(tree.values_list("cancel_reason", flat=True)) == {"parent cancelled: shop closed"}
    chrono_forge_env.run_all()  # every pending delivery and merge poll exits
    assert wc.calls("leaf") == 0 and wc.calls("after_merge") == 0
    assert set(Workflow.objects.values_list("state", flat=True)) == {"cancelled"}


def test_a_finished_child_keeps_its_state_when_its_parent_is_cancelled(chrono_forge_env):
    wc.Parent.perform_now("q", children=2)
    wc.Leaf._execute("q$kids$leaf_0")
    wc.Parent.cancel("q")
    assert row("q$kids$leaf_0").state == "completed"
    assert_cancelled("q$kids$leaf_1", "parent cancelled")


def test_a_queryset_cancel_counts_rows_and_descendants(chrono_forge_env):
    wc.Parent.perform_now("r1", children=2)
    wc.TwoSteps.perform_later("r2")
    chrono_forge_env.run_all()  # r1 (with its children) and r2 complete
    wc.Parent.perform_now("r3", children=2)
    wc.Leaf.perform_later("r4")
    count = Workflow.objects.filter(key__in=["r1", "r2", "r3", "r4"]).cancel("sweep")
    assert count == 1 + 2 + 1  # r3 with its two children, and r4; r1 and r2 had finished
    assert [row(key).state for key in ("r1", "r2", "r3", "r4")] == [
        "completed",
        "completed",
        "cancelled",
        "cancelled",
    ]
    assert row("r4").cancel_reason == "sweep"


def test_a_merge_waiting_on_a_child_an_operator_cancelled_is_held_and_resumes_after_a_forced_retry(
    chrono_forge_env,
):
    wc.Parent.perform_now("m", children=2)
    wc.Leaf.cancel("m$kids$leaf_1", reason="this one is bad")
    for _ in range(5):  # the other child completes; polls come and go; the parent stays held
        chrono_forge_env.advance(60)
        chrono_forge_env.run_due()
    parent = row("m")
    assert parent.state == "idle" and parent.next_run_at is not None  # scheduled: the next poll
    assert wc.calls("after_merge") == 0
    branch = ExecutionLog.objects.get(workflow__key="m", step_name="branch$kids")
    assert branch.metadata["poll"]["blocked"] == 1 and branch.metadata["poll"]["pending"] == 1
    with pytest.raises(WorkflowNotRetryableError, match="resume_cancelled=True"):
        row("m$kids$leaf_1").retry_later()
    row("m$kids$leaf_1").retry_later(resume_cancelled=True)
    for _ in range(10):
        chrono_forge_env.advance(60)
        chrono_forge_env.run_due()
    assert row("m$kids$leaf_1").state == "completed"
    assert row("m").state == "completed" and wc.calls("after_merge") == 1


def test_a_parent_waiting_on_a_merge_of_1000_children_is_cancelled_with_all_of_them(
    chrono_forge_env,
):
    wc.Parent.perform_now("wide", children=1000)  # spawned, none run yet; the merge polls
    parent = row("wide")
    assert parent.state == "idle" and parent.next_run_at is not None
    assert Workflow.objects.filter(key="wide").cancel("campaign ended") == 1001
    children = Workflow.objects.filter(parent_execution_log__workflow=parent)
    assert children.count() == 1000
    assert set(children.values_list("state", "cancel_reason").distinct()) == {
        ("cancelled", "parent cancelled: campaign ended")
    }
    assert chrono_forge_env.run_all() > 0  # the children's first deliveries and the merge poll
    assert (wc.calls("leaf"), wc.calls("after_merge")) == (0, 0)  # ... ran nothing
    assert not children.exclude(state="cancelled").exists()
    assert row("wide").state == "cancelled" and row("wide").next_run_at is None


# -- retry -----------------------------------------------------------------------------------------
def test_a_cancelled_run_is_retried_only_with_resume_cancelled(chrono_forge_env):
    wc.Broken.perform_later("again")
    chrono_forge_env.run_all()
    wc.Broken.cancel("again", reason="paused")
    with pytest.raises(WorkflowNotRetryableError, match="is cancelled"):
        wc.Broken.retry_later("again")
    with pytest.raises(WorkflowNotRetryableError, match="is cancelled"):
        wc.Broken.retry_now("again")
    with pytest.raises(TypeError, match="resume_cancelled must be a bool"):
        wc.Broken.retry_later("again", resume_cancelled="yes")
    assert row("again").next_run_at is None
    wc.FLAGS["fixed"] = True
    wc.Broken.retry_later("again", resume_cancelled=True)
    chrono_forge_env.run_all()
    wf = row("again")
    assert wf.state == "completed" and (wf.cancel_reason, wf.cancelled_at) == ("", None)
    assert (wc.calls("boom"), wc.calls("after")) == (2, 1)


def test_a_lost_forced_retry_is_overdue_and_resent_as_a_forced_retry(chrono_forge_env):
    wc.Broken.perform_later("lost")
    chrono_forge_env.run_all()
    wc.Broken.cancel("lost")
    wc.FLAGS["fixed"] = True
    wc.Broken.retry_later("lost", resume_cancelled=True)
    assert chrono_forge_env.drop_pending() == 1  # the broker loses it
    chrono_forge_env.advance(3600)
    assert Workflow.objects.overdue().filter(key="lost").exists()
    assert Workflow.objects.resume_overdue() == 1
    chrono_forge_env.run_all()
    assert row("lost").state == "completed"


# -- the signal ------------------------------------------------------------------------------------
def test_workflow_cancelled_is_sent_once_per_cancelled_run_with_its_reason(chrono_forge_env):
    seen = []

    def receive(sender, workflow, reason, **kwargs):
        seen.append((sender, workflow.key, workflow.state, reason))

    wc.Parent.perform_now("s", children=2)
    signals.workflow_cancelled.connect(receive, weak=False, dispatch_uid="test-cancel")
    try:
        wc.Parent.cancel("s", reason="why")
    finally:
        signals.workflow_cancelled.disconnect(dispatch_uid="test-cancel")
    assert sorted(seen, key=lambda item: item[1]) == sorted(
        [
            (wc.Parent, "s", "cancelled", "why"),
            (wc.Leaf, "s$kids$leaf_0", "cancelled", "parent cancelled: why"),
            (wc.Leaf, "s$kids$leaf_1", "cancelled", "parent cancelled: why"),
        ],
        key=lambda item: item[1],
    )
