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


def test_cancelling_a_pass_mid_step_runs_the_hook_only_after_the_pass_released(qcluster, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    cluster = qcluster()
    oc.SlowStep.perform_later("e2e-mid", started=str(started), go=str(go))
    wait_for(started.exists, timeout=60, interval=0.1, message="the step to start")
    wf = oc.SlowStep.cancel("e2e-mid", reason="stop it")
    assert wf.state == "cancelled" and wf.locked_by is not None  # the pass still runs
    wait_for(  # the cancel's own hook delivery arrives meanwhile, finds the lock held, exits
        lambda: "the cancelled pass still holds the lock" in cluster.log_text(),
        timeout=30,
        interval=0.1,
        message="the hook delivery to find the pass running",
    )
    assert not Group.objects.filter(name__startswith="on_cancel:e2e-mid").exists()
    go.write_text("go")

    def hook_done():
        row = Workflow.objects.get(key="e2e-mid")
        return row.locked_by is None and row.next_run_at is None and row.parked_on is None

    wait_for(hook_done, timeout=60, interval=0.2, message="the pass to stop and the hook to run")
    assert Group.objects.filter(name="on_cancel:e2e-mid:stop it").count() == 1, cluster.log_tail()
    assert not Group.objects.filter(name="after:e2e-mid").exists()  # no further step started
    logs = {log.step_name: log for log in ExecutionLog.objects.filter(workflow__key="e2e-mid")}
    work = logs["durably_execute$work"]
    (hook,) = [log for name, log in logs.items() if step_names.is_on_cancel_marker(name)]
    assert work.state == "completed" and hook.state == "completed" and hook.attempts == 1
    assert hook.started_at >= work.completed_at
    assert "durably_execute$after" not in logs
