"""End to end: a parent fans out 2,000 children over a QuerySet under a real qcluster."""

import pytest
from django.conf import settings
from django.test import override_settings
from django_q.models import Task

from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_branches as wb
from tests.helpers import wait_for

N = 2000
SAVING_DISPATCHER = "tests.e2e_tasks.SavingDjangoQDispatcher"


def parent_done():
    parent = Workflow.objects.filter(key="e2e").values_list("state", flat=True).first()
    if parent in ("failed", "stalled"):
        raise AssertionError(f"the parent ended {parent}")
    return parent == "completed"


@pytest.mark.e2e
@pytest.mark.postgres_only
def test_a_parent_fans_out_2000_children_over_a_queryset_and_completes(qcluster):
    pks = wb.seed_groups(N, prefix="e2e")
    qcluster(extra_env={"DJANGO_SETTINGS_MODULE": "tests.settings_qcluster_fanout"})
    # passes keep their django-q2 result rows (they are sent with save=False by default), so the
    # deliveries can be counted below; the cluster's settings do the same for its own enqueues
    with override_settings(CHRONO_FORGE={**settings.CHRONO_FORGE, "DISPATCHER": SAVING_DISPATCHER}):
        wb.FanOut.perform_later("e2e", source="groups", prefix="e2e", of=500)

    wait_for(parent_done, timeout=100, interval=0.5, message="the fan-out parent to complete")

    children = Workflow.objects.filter(key__startswith="e2e$grp$items_")
    assert children.count() == N
    assert children.filter(state="completed").count() == N
    assert sorted(children.values_list("kwargs__item", flat=True)) == pks
    branch = ExecutionLog.objects.get(workflow__key="e2e", step_name="branch$grp")
    assert set(children.values_list("parent_execution_log_id", flat=True)) == {branch.pk}
    assert branch.metadata["cursors"] == {"items": {"pk": pks[-1]}}
    assert branch.metadata["poll"]["spawned"] == N and branch.metadata["poll"]["pending"] == 0

    # Every child ran its step exactly once: one log per child, first attempt, completed.
    work = ExecutionLog.objects.filter(
        workflow__key__startswith="e2e$grp$", step_name="durably_execute$work"
    )
    assert work.count() == N
    assert set(work.values_list("attempts", "state").distinct()) == {(1, "completed")}

    # Each child was delivered once (no rekick), and the parent ran exactly two passes: the
    # fan-out and the poller's wake-up (it was never replayed while waiting).
    runs = Task.objects.filter(func="chrono_forge.tasks.run_workflow")
    wait_for(lambda: runs.count() >= N + 2, timeout=20, message="the monitor to save every result")
    passes = [task.args for task in runs]
    child_keys = [args[1] for args in passes if args[1].startswith("e2e$")]
    assert len(child_keys) == len(set(child_keys)) == N
    assert sum(1 for args in passes if args[1] == "e2e") == 2
    assert branch.metadata["poll"]["rekick_total"] == 0
    finalize = ExecutionLog.objects.get(workflow__key="e2e", step_name="durably_execute$finalize")
    assert finalize.result is True
