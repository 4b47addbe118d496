"""Scale-out: two qcluster processes ("machines") on one PostgreSQL database share the work.

Each cluster is its own django-q2 cluster (its own id, name in the logs, workers, scheduler) on the
same queue (``Q_CLUSTER["name"]``), as on two machines. The row lock and the continuation tokens are
what keep a step from running twice; a side table counts every step body that ran, and where.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_engines as we
from tests.helpers import wait_for

N = 200
STEPS = ("fetch", "transform", "store")
RUNNING = re.compile(r"Q Cluster (\S+) \[[^\]]*\] running\.")


@pytest.mark.e2e
@pytest.mark.postgres_only
def test_two_clusters_share_200_workflows_and_run_every_step_once(runs_table, qcluster):
    machines = ("machine-a", "machine-b")
    clusters = [qcluster(extra_env={"CHRONO_FORGE_TEST_MACHINE": name}) for name in machines]
    names = [RUNNING.search(cluster.log_text()).group(1) for cluster in clusters]
    assert names[0] != names[1], names

    # A short wait between the first two steps: every workflow takes two passes, and the second
    # is a delayed continuation either cluster may pick up.
    keys = [f"scale-{i}" for i in range(N)]
    for key in keys:
        we.Pipeline.perform_later(key, pause=0.2)

    def all_done():
        states = Counter(Workflow.objects.filter(key__in=keys).values_list("state", flat=True))
        if states["failed"] or states["stalled"]:
            raise AssertionError(f"some workflows ended badly: {states}")
        return states["completed"] == N

    wait_for(all_done, timeout=50, interval=0.5, message=f"{N} workflows on two clusters")

    runs = we.runs()
    per_step = Counter((key, step) for key, step, _, _ in runs)
    assert set(per_step) == {(key, step) for key in keys for step in STEPS}
    assert set(per_step.values()) == {1}, [k for k, n in per_step.items() if n > 1]
    by_machine = Counter(machine for _, _, machine, _ in runs)
    print(f"\nstep executions per cluster: {dict(by_machine)}")
    assert set(by_machine) == set(machines), by_machine
    assert min(by_machine.values()) >= N // 10, by_machine  # both really took a share

    logs = ExecutionLog.objects.filter(
        workflow__key__in=keys, step_name__startswith="durably_execute$"
    )
    assert logs.count() == N * len(STEPS)
    assert set(logs.values_list("attempts", "state").distinct()) == {(1, "completed")}
    assert all(cluster.is_running() for cluster in clusters)
