"""End to end under a real ``qcluster`` (ORM broker, on the SQLite WAL file or PostgreSQL test
database): a step that fails once is retried by a delayed continuation that starts on time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chrono_forge.models import ErrorLog
from tests import workflows_core as w
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

#: The ORM broker's delayed row becomes visible at its due time; the cluster polls every 0.1 s
#: (tests settings) and a pass takes milliseconds, so 1.5 s is a generous bound that still catches a
#: lost delay (a continuation run by the 30 s django-q2 scheduler, or by a later sweep).
ON_TIME = timedelta(seconds=1.5)


def test_a_failed_step_is_retried_after_its_backoff_by_a_real_qcluster(qcluster):
    cluster = qcluster()
    wf = w.E2EFlaky.perform_later("e2e-retry")

    def completed():
        wf.refresh_from_db()
        return wf.state in ("completed", "failed", "stalled")

    wait_for(completed, timeout=30, message="the workflow to finish")
    assert wf.state == "completed", cluster.log_tail()
    assert wf.context == {"failed_once": True, "done": True}
    assert wf.locked_by is None and wf.next_run_at is None

    [error] = ErrorLog.objects.filter(workflow=wf)
    assert (error.step_name, error.attempt) == ("durably_execute$flaky", 1)
    step = wf.execution_logs.get(step_name="durably_execute$flaky")
    assert (step.attempts, step.state, step.result) == (2, "completed", "ok")
    due = error.created + timedelta(seconds=1)
    started = step.last_executed_at  # stamped when attempt 2 began
    print(f"\nretry started {(started - due).total_seconds():.3f} s after its due time")
    assert due <= started <= due + ON_TIME, (due, started, started - due)
    assert cluster.stop() == 0
