"""End to end with a real qcluster: a durable wait, a polled wait_until and a continue_if woken
from another process (this test process), on the suite's database (SQLite file in WAL mode, or
PostgreSQL)."""

import time
from datetime import datetime, timedelta

import pytest

from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_waits as ww
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def row(key):
    return Workflow.objects.get(key=key)


@pytest.mark.parametrize("wake", ["resume", "perform_later"])
def test_waits_polls_and_wakes_under_a_real_qcluster(qcluster, tmp_path, wake):
    qcluster()
    flag = tmp_path / "shipped.flag"
    began = time.monotonic()
    ww.E2EWaits.perform_later("e2e", flag_path=str(flag))

    # Parked on the gate: idle, nothing scheduled, after the wait and three polls.
    def parked():
        gate = ExecutionLog.objects.filter(workflow__key="e2e", step_name="continue_if$flag_raised")
        return gate.exists() and row("e2e").state == "idle" and row("e2e").locked_by is None

    wait_for(parked, timeout=10, interval=0.05, message="the workflow to park on continue_if")
    wf = row("e2e")
    assert wf.next_run_at is None
    wait = ExecutionLog.objects.get(workflow=wf, step_name="wait$pause")
    assert wait.state == "completed"
    deadline = datetime.fromisoformat(wait.metadata["wait_until"])
    assert deadline == wait.started_at + timedelta(seconds=2)
    assert wait.completed_at >= deadline  # the wait was not cut short
    poll = ExecutionLog.objects.get(workflow=wf, step_name="wait_until$third_poll")
    assert (poll.state, poll.attempts, poll.metadata["result"]) == ("completed", 3, True)
    polls = [datetime.fromisoformat(p) for p in wf.context["polls"]]
    assert polls[0] >= deadline
    # each poll came no earlier than its check_interval (continuations, not a sleeping worker)
    assert all(b - a >= timedelta(seconds=1) for a, b in zip(polls, polls[1:], strict=False))

    flag.write_text("yes")  # the event, then the wake-up from this (another) process
    if wake == "resume":
        wf.resume()
    else:
        ww.E2EWaits.perform_later("e2e")

    wait_for(
        lambda: row("e2e").state == "completed", timeout=10, message="the workflow to complete"
    )
    assert time.monotonic() - began < 10
    wf = row("e2e")
    assert wf.locked_by is None and wf.next_run_at is None
    assert list(wf.execution_logs.order_by("id").values_list("step_name", flat=True)) == [
        "wait$pause",
        "wait_until$third_poll",
        "continue_if$flag_raised",
        "durably_execute$finish",
        "$workflow_completion$",
    ]
    assert ExecutionLog.objects.get(workflow=wf, step_name="continue_if$flag_raised").attempts == 2
