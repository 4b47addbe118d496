"""End to end under a real ``qcluster``: passes are sent with ``save=False``, so django-q2 keeps no
result row for a successful pass (chrono_forge's own logs hold it, and the cluster's monitor skips
the Task write and the ``save_limit`` pruning), while a failed pass is still in its Failure list."""

from __future__ import annotations

import pytest
from django_q.models import OrmQ, Task

from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_core as w
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_a_successful_pass_leaves_no_task_row_and_a_failed_pass_is_kept(qcluster):
    cluster = qcluster()  # the test settings keep every result (save_limit 0)
    w.OneStep.perform_later("results-ok")
    w.MissingStepMethod.perform_later("results-bad")

    def finished():
        states = dict(Workflow.objects.values_list("key", "state"))
        return states == {"results-ok": "completed", "results-bad": "stalled"}

    wait_for(finished, timeout=30, message="both workflows to finish")
    # the monitor acknowledges a task (deletes its queue row) after saving its result
    wait_for(lambda: not OrmQ.objects.exists(), timeout=30, message="the monitor's acks")

    names = set(Task.objects.values_list("name", flat=True))
    assert "chrono_forge OneStep(results-ok)" not in names, cluster.log_tail()
    failed = Task.objects.get(name="chrono_forge MissingStepMethod(results-bad)")
    assert failed.success is False and "no_such_method" in failed.result
    # and chrono_forge's own record of it
    error = ErrorLog.objects.get(workflow__key="results-bad")
    assert error.error_class == "chrono_forge.exceptions.InvalidStepArgument"
