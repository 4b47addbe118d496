"""Chaos, end to end: the short version of bench/chaos.py, run by the same driver.

Real qclusters (bench/chaos_settings.py: short lock, reap and overdue timers) are SIGKILLed as a
whole process group at random moments while workflows and a small fan-out run, and queue rows are
deleted while the killed cluster is down; the test process runs the reaper and the overdue sweep.
Every step body records its execution in a side table, in its own committed transaction, with
whether its step's completion was already committed.
"""

import pytest

from bench import chaos, chaos_settings
from bench.workflows import ChaosSteps, record_execution
from chrono_forge.models import Workflow

#: Every fault kind: kills, and lost first deliveries, continuations, merge pollers and children.
FAULTS = chaos.FAULT_KINDS
#: What django-q2's sentinel logs when it kills a worker whose task outlived ``timeout``.
TIMEOUT_KILL = "after timeout"


@pytest.mark.e2e
def test_workflows_survive_killed_clusters_and_lost_queue_rows(qcluster, settings):
    settings.CHRONO_FORGE = chaos_settings.CHRONO_FORGE  # the sweeps of this process
    plan = chaos.Plan(
        workflows=8,
        steps=6,
        fanouts=2,
        children=4,  # enough children queued at once that a kill finds one to lose
        kills=4,
        deletions=1,
        faults=FAULTS,
        seed=7,
        work=0.1,
        timeout=90,
    )
    clusters = []

    def start_cluster():
        clusters.append(qcluster(extra_env={"DJANGO_SETTINGS_MODULE": chaos.SETTINGS}))
        return clusters[-1]

    report = chaos.run(plan, start_cluster)
    print("\n" + "\n".join(report.lines()))
    # django-q2 kills a pass that outlives its ``timeout`` (a slow box): a kill like the driver's.
    timeouts = sum(cluster.log_text().count(TIMEOUT_KILL) for cluster in clusters)

    # The faults happened: at least two kills, and a lost queue row of every enabled kind.
    assert report.kills >= 2, report.lines()
    assert all(report.deleted.get(kind, 0) >= 1 for kind in plan.queue_faults), report.deleted
    # Everything completed after the sweeps: the 8 workflows, the 2 fan-outs, their 8 children.
    assert report.workflows == 18
    assert report.lost == [] and report.completed == 18
    # No step body ran after its completion was committed; each completed step really ran; only a
    # kill (the driver's SIGKILL, or django-q2's of a timed-out worker) makes a step run again,
    # and each kill interrupts at most one attempt of a given step.
    assert report.after_completion == []
    assert report.completed_without_execution == []
    assert report.steps == 8 * 6 + 2 * 2 + 8 * 3
    assert 1 <= report.max_executions <= 1 + report.kills + timeouts, (report.max_step, timeouts)


# -- the driver's own checks, without a cluster -----------------------------------------------


@pytest.fixture
def side_table(db):
    chaos._create_table()
    yield
    chaos._drop_table()


def test_the_report_flags_a_body_run_after_its_completion_and_a_step_that_never_ran(side_table):
    ChaosSteps.perform_now("chaos-a", steps=2, pause=0, work=0)
    row = Workflow.objects.get(key="chaos-a")
    assert row.state == "completed"
    report = chaos.Report(chaos.Plan(), "any")
    chaos._fill(report, last_fault=None)
    assert (report.completed, report.steps, report.max_executions) == (1, 2, 1)
    assert report.after_completion == [] and report.ok

    record_execution(row, "durably_execute$s1")  # as a step body re-run after its completion
    report = chaos.Report(chaos.Plan(), "any")
    chaos._fill(report, last_fault=None)
    assert report.after_completion == ["chaos-a durably_execute$s1: 1 of 2 executions"]
    assert report.max_executions == 2 and not report.ok

    chaos._drop_table()
    chaos._create_table()  # no execution recorded at all
    report = chaos.Report(chaos.Plan(), "any")
    chaos._fill(report, last_fault=None)
    assert report.completed_without_execution == [
        "chaos-a durably_execute$s0",
        "chaos-a durably_execute$s1",
    ]


def test_queue_rows_are_told_apart_and_deleted_per_workflow(side_table):
    import random

    ChaosSteps.perform_later("chaos-new", steps=2, pause=0, work=0)
    ChaosSteps.perform_now("chaos-paused", steps=2, pause=60, work=0)  # parks on its pause
    ChaosSteps.perform_later("chaos-paused")  # a wake-up: no token, the workflow has started
    kinds = sorted((kind, target[1]) for _, kind, target in chaos.queue_rows())
    assert kinds == [
        ("continuation", "chaos-paused"),
        ("first", "chaos-new"),
        ("other", "chaos-paused"),
    ]

    hit = chaos.delete_rows({"first": 5, "continuation": 1, "poller": 1}, random.Random(1))
    assert hit == {"first": 1, "continuation": 1, "poller": 0}
    assert [(kind, target[1]) for _, kind, target in chaos.queue_rows()] == [
        ("other", "chaos-paused")
    ]
