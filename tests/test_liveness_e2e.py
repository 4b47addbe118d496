"""End to end under a real qcluster: a step that takes its worker down (``sys.exit()``,
``os._exit(1)`` as after SIGKILL or an OOM kill, django-q2's task timeout) ends ``stalled`` after
its ``max_attempts``, with an ErrorLog row for each lost attempt, instead of coming back every
``retry`` period forever."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_poison as p
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

POISON = "durably_execute$poison"


def finished(key: str, reap: bool = False):
    def check():
        if reap:  # the reaper's Schedule, on a short threshold
            Workflow.objects.reap_stalled(timedelta(seconds=3))
            time.sleep(0.5)
        return Workflow.objects.get(key=key).state in ("completed", "failed", "stalled")

    return check


def lost_attempts(key: str) -> list[tuple[int, str]]:
    rows = ErrorLog.objects.filter(workflow__key=key, step_name=POISON).order_by("id")
    return list(rows.values_list("attempt", "error_class"))


def test_a_step_calling_sys_exit_ends_stalled_after_max_attempts(qcluster, tmp_path):
    counter = tmp_path / "executions"
    cluster = qcluster()
    p.DyingStep.perform_later("e2e-exit", how="system_exit", counter=str(counter))
    wait_for(finished("e2e-exit"), timeout=90, interval=0.2, message="the poison step to stall")
    wf = Workflow.objects.get(key="e2e-exit")
    assert wf.state == "stalled", cluster.log_tail()
    assert lost_attempts("e2e-exit") == [(1, "SystemExit"), (2, "SystemExit"), (3, "SystemExit")]
    step = wf.execution_logs.get(step_name=POISON)
    assert (step.state, step.attempts) == ("failed", 3)
    assert step.error_message == "worker died during attempt 3 (SystemExit: 3)"
    assert len(counter.read_text().splitlines()) == 3
    assert wf.next_run_at is None and wf.locked_by is None


def test_a_step_calling_os_exit_ends_stalled_after_max_attempts(qcluster, tmp_path):
    counter = tmp_path / "executions"
    cluster = qcluster(extra_env={"DJANGO_SETTINGS_MODULE": "tests.settings_qcluster_poison"})
    p.DyingStep.perform_later("e2e-kill", how="os_exit", counter=str(counter))
    wait_for(finished("e2e-kill", reap=True), timeout=150, message="the poison step to stall")
    wf = Workflow.objects.get(key="e2e-kill")
    assert wf.state == "stalled", cluster.log_tail()
    lost = "chrono_forge.exceptions.StepAttemptLost"
    assert lost_attempts("e2e-kill") == [(1, lost), (2, lost), (3, lost)]
    step = wf.execution_logs.get(step_name=POISON)
    assert (step.state, step.attempts, step.error_class) == ("failed", 3, lost)
    assert step.error_message.startswith("worker died during attempt 3")
    assert len(counter.read_text().splitlines()) == 3
    assert wf.next_run_at is None and wf.locked_by is None


def test_a_step_outliving_the_task_timeout_ends_stalled_after_max_attempts(
    qcluster, tmp_path, settings
):
    """django-q2's timeout raises its TimeoutException (a SystemExit) in the worker: recorded
    against the attempt, charged, and the worker goes on as django-q2 wants."""
    settings.CHRONO_FORGE = {**settings.CHRONO_FORGE, "TASK_TIMEOUT": 2}
    counter = tmp_path / "executions"
    cluster = qcluster(extra_env={"DJANGO_SETTINGS_MODULE": "tests.settings_qcluster_poison"})
    p.DyingStep.perform_later("e2e-timeout", how="sleep", counter=str(counter))
    wait_for(finished("e2e-timeout"), timeout=120, interval=0.2, message="the slow step to stall")
    wf = Workflow.objects.get(key="e2e-timeout")
    assert wf.state == "stalled", cluster.log_tail()
    timeout = "django_q.exceptions.TimeoutException"
    assert lost_attempts("e2e-timeout") == [(1, timeout), (2, timeout), (3, timeout)]
    step = wf.execution_logs.get(step_name=POISON)
    assert (step.state, step.attempts) == ("failed", 3)
    assert step.error_message.startswith(f"worker died during attempt 3 ({timeout}: ")
    assert len(counter.read_text().splitlines()) == 3
