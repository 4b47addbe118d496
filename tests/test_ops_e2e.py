"""End to end with a real qcluster: a continuation the broker lost is recovered by
resume-overdue."""

import io
import time

import pytest
from django.core.management import call_command
from django_q.models import OrmQ

from chrono_forge.models import Workflow
from tests import workflows_ops as w
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_a_lost_continuation_is_recovered_under_a_real_qcluster(qcluster, tmp_path):
    marker = tmp_path / "failed-once"
    w.FailsOnceByFile.perform_now(
        "lost", marker=str(marker)
    )  # the step fails, a retry is due in 1 s
    wf = Workflow.objects.get(key="lost")
    assert wf.state == "idle" and wf.next_run_at is not None
    assert OrmQ.objects.count() == 1
    OrmQ.objects.all().delete()  # the broker loses it

    qcluster()
    time.sleep(1.5)  # past due: nothing comes
    wf.refresh_from_db()
    assert wf.state == "idle" and wf.execution_logs.get().state == "pending"

    out = io.StringIO()
    call_command("chrono_forge", "resume-overdue", "--grace", "0", stdout=out)
    assert "Re-enqueued 1 overdue workflow(s)" in out.getvalue()

    wait_for(
        lambda: Workflow.objects.get(key="lost").state == "completed",
        timeout=15,
        message="the recovered workflow to complete",
    )
    step = Workflow.objects.get(key="lost").execution_logs.get(step_name="durably_execute$step")
    assert (step.state, step.attempts, step.result) == ("completed", 2, "ok")


def test_a_lost_first_delivery_is_recovered_under_a_real_qcluster(qcluster):
    """The first delivery's OrmQ row is deleted: the row's due time (set in its INSERT) makes it
    overdue, and resume-overdue with a short grace sends it again."""
    from tests import workflows_liveness as wl

    wf = wl.Quick.perform_later("first-lost")
    assert Workflow.objects.get(pk=wf.pk).next_run_at is not None
    assert OrmQ.objects.count() == 1
    OrmQ.objects.all().delete()  # the broker loses the first delivery

    qcluster()
    time.sleep(1.5)  # nothing comes
    wf.refresh_from_db()
    assert (wf.state, wf.started_at) == ("idle", None)

    out = io.StringIO()
    call_command("chrono_forge", "resume-overdue", "--grace", "0.01", stdout=out)  # 0.6 s
    assert "Re-enqueued 1 " in out.getvalue()
    wait_for(
        lambda: Workflow.objects.get(key="first-lost").state == "completed",
        timeout=15,
        message="the recovered first delivery to complete",
    )
    step = Workflow.objects.get(key="first-lost").execution_logs.get(
        step_name="durably_execute$work"
    )
    assert (step.state, step.attempts, step.result) == ("completed", 1, "done")
