"""End to end with a real qcluster: messages sent from this process (not the worker's) wake a run
parked on receive, and a burst sent while its passes run is consumed once each, in order, on the
suite's database (SQLite file in WAL mode, or PostgreSQL)."""

import pytest

from chrono_forge.models import ExecutionLog, Message, Workflow
from tests import workflows_messages as wm
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def row(key):
    return Workflow.objects.get(key=key)


def parked_on(key, step):
    wf = row(key)
    return wf.state == "idle" and wf.locked_by is None and wf.parked_on == step


def test_a_message_from_another_process_wakes_a_parked_run(qcluster):
    qcluster()
    wm.Loop.perform_later("e2e", count=8)
    wait_for(
        lambda: parked_on("e2e", "receive$item-0"), timeout=30, message="the run to park on item-0"
    )
    assert row("e2e").next_run_at is None  # parked: nothing scheduled

    wm.Loop.send("e2e", "item", "first")
    wait_for(
        lambda: parked_on("e2e", "receive$item-1"), timeout=30, message="item-0 to be consumed"
    )
    assert row("e2e").context == {}  # perform has not returned yet

    # A burst: some sends land while a pass is running (wake_requested), none is lost.
    for n in range(7):
        wm.Loop.send("e2e", "item", n, idempotency_key=f"burst-{n}")
    wm.Loop.send("e2e", "item", 0, idempotency_key="burst-0")  # a retried sender: no new message
    wait_for(lambda: row("e2e").state == "completed", timeout=60, message="the run to complete")

    wf = row("e2e")
    assert wf.context["got"] == ["first", 0, 1, 2, 3, 4, 5, 6]
    assert (wf.locked_by, wf.next_run_at, wf.parked_on) == (None, None, None)
    assert Message.objects.filter(workflow=wf).count() == 8
    assert Message.objects.pending().count() == 0
    receives = ExecutionLog.objects.filter(workflow=wf, step_name__startswith="receive$")
    assert receives.count() == 8 and not receives.exclude(state="completed").exists()
