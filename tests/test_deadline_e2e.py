"""End to end under a real qcluster: a run parked on an event past its deadline is cancelled by the
overdue sweep's maintenance task, run by a worker, with its ErrorLog entry; the event arriving
afterwards runs nothing."""

from __future__ import annotations

import time

import pytest

from chrono_forge import clock, deadlines, maintenance
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_deadline as wd
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def row(key: str) -> Workflow:
    return Workflow.objects.get(key=key)


def test_a_run_parked_on_an_event_is_cancelled_by_the_sweep_under_a_real_cluster(qcluster):
    cluster = qcluster()
    wd.Parked.perform_later("e2e-deadline", options={"deadline": 2})
    wait_for(
        lambda: row("e2e-deadline").parked_on == "continue_if$gate",
        timeout=30,
        message="the run to park on its gate",
    )
    wf = row("e2e-deadline")
    assert wf.state == "idle" and wf.next_run_at is None  # parked: nothing will run it
    assert wf.deadline_at is not None
    pause = (wf.deadline_at - clock.now()).total_seconds()
    time.sleep(max(pause, 0) + 0.2)
    maintenance.enqueue("resume-overdue")  # what the Schedule does, run by a worker
    wait_for(
        lambda: row("e2e-deadline").state == "cancelled",
        timeout=30,
        message="the sweep to cancel the run",
    )
    wf = row("e2e-deadline")
    assert wf.cancel_reason == deadlines.DEADLINE_REASON, cluster.log_tail()
    assert (wf.locked_by, wf.next_run_at, wf.parked_on) == (None, None, None)
    errors = ErrorLog.objects.filter(workflow=wf).values_list("error_class", "step_name")
    assert list(errors) == [("chrono_forge.exceptions.DeadlineExceeded", None)]
    wd.Parked.perform_later("e2e-deadline")  # the event arrives late: its pass finds nothing
    time.sleep(1.5)
    assert row("e2e-deadline").state == "cancelled"
    assert not ExecutionLog.objects.filter(workflow=wf, step_name="durably_execute$after").exists()
