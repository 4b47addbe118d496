"""End to end under a real qcluster: cancelling a run parked on an event runs its ``on_cancel``
hook once on a worker, which writes a row; the run stays cancelled with nothing left scheduled."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from chrono_forge import step_names
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_on_cancel as oc
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_cancelling_a_parked_run_runs_its_hook_once_on_a_worker(qcluster):
    cluster = qcluster()
    oc.Gated.perform_later("e2e-hook")
    wait_for(
        lambda: Workflow.objects.get(key="e2e-hook").parked_on == "continue_if$gate",
        timeout=60,
        interval=0.2,
        message="the run to park on its gate",
    )
    wf = oc.Gated.cancel("e2e-hook", reason="customer left")
    assert wf.state == "cancelled" and step_names.is_on_cancel_marker(wf.parked_on)

    def hook_done():
        row = Workflow.objects.get(key="e2e-hook")
        return row.next_run_at is None and row.parked_on is None

    wait_for(hook_done, timeout=60, interval=0.2, message="the on_cancel hook to finish")
    assert Group.objects.filter(name="on_cancel:e2e-hook:customer left").count() == 1, (
        cluster.log_tail()
    )
    log = ExecutionLog.objects.get(
        workflow__key="e2e-hook", step_name__startswith=step_names.ON_CANCEL_MARKER_PREFIX
    )
    assert (log.state, log.attempts, log.result) == ("completed", 1, "released")
    row = Workflow.objects.get(key="e2e-hook")
    assert (row.state, row.cancel_reason, row.locked_by) == ("cancelled", "customer left", None)
