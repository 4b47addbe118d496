"""End to end under a real qcluster: a django-q2 worker runs the pass in its main thread, so a step
running past its ``timeout`` is interrupted there (django-q2's own task timeout, armed on the same
SIGALRM timer, is longer and left in place), recorded as StepTimeout, and retried per its policy."""

from __future__ import annotations

import pytest

from chrono_forge.models import ErrorLog, Workflow
from tests.helpers import wait_for
from tests.workflows_timeout import SlowStep

pytestmark = pytest.mark.e2e

SLOW = "durably_execute$slow"


def test_a_step_past_its_timeout_is_interrupted_in_the_worker_and_retried(qcluster, tmp_path):
    counter = tmp_path / "executions"
    cluster = qcluster()  # tests.settings: django-q2's task timeout is 30 s
    SlowStep.perform_later(
        "e2e-step-timeout", timeout=1, sleep=20, slow_attempts=1, attempts=2, counter=str(counter)
    )

    def finished():
        return Workflow.objects.get(key="e2e-step-timeout").state in ("completed", "stalled")

    wait_for(finished, timeout=60, interval=0.2, message="the timed-out step to be retried")
    wf = Workflow.objects.get(key="e2e-step-timeout")
    assert wf.state == "completed", cluster.log_tail()
    assert wf.context["result"] == 2
    [error] = ErrorLog.objects.filter(workflow=wf)
    assert (error.step_name, error.attempt) == (SLOW, 1)
    assert error.error_class == "chrono_forge.exceptions.StepTimeout"
    assert error.error_message == f"{SLOW}: attempt 1 ran past its timeout of 1 s (interrupted)"
    assert len(counter.read_text().splitlines()) == 2  # the slow attempt and the retry
    # The worker that ran the interrupted attempt was not killed by django-q2's timeout: the
    # retry ran in one of the cluster's original worker processes.
    assert "TimeoutException" not in cluster.log_text(), cluster.log_tail()
