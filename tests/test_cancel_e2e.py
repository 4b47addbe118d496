"""Cancellation end to end, under a real qcluster: a pass cancelled while its step body runs in a
worker stops at the next primitive and releases as ``cancelled``; a continuation delivered after
the cancel runs nothing."""

from __future__ import annotations

import re

import pytest

from chrono_forge.models import ExecutionLog, Workflow
from tests.helpers import wait_for
from tests.workflows_cancel import SlowThenSecond

pytestmark = pytest.mark.e2e

PASSES = re.compile(r"Processed 'chrono_forge\.tasks\.run_workflow'")


def test_a_run_cancelled_mid_step_in_a_worker_starts_no_further_step(qcluster, tmp_path):
    started, release, counter = (tmp_path / name for name in ("started", "release", "counter"))
    cluster = qcluster()
    SlowThenSecond.perform_later(
        "e2e-mid", started=str(started), release=str(release), counter=str(counter)
    )
    wait_for(started.exists, timeout=30, message="the first step to start in the worker")
    SlowThenSecond.cancel("e2e-mid", reason="refunded by hand")
    row = Workflow.objects.get(key="e2e-mid")
    assert row.state == "cancelled" and row.locked_by  # the pass still holds its lock

    release.touch()  # the body returns; the pass stops at the next primitive

    def released():
        return Workflow.objects.get(key="e2e-mid").locked_by is None

    wait_for(released, timeout=30, message="the cancelled pass to release its lock")
    row = Workflow.objects.get(key="e2e-mid")
    assert (row.state, row.cancel_reason, row.next_run_at) == (
        "cancelled",
        "refunded by hand",
        None,
    ), cluster.log_tail()
    first = ExecutionLog.objects.get(workflow=row, step_name="durably_execute$first")
    assert (first.state, first.result) == ("completed", 1)  # committed with the unlock
    assert not ExecutionLog.objects.filter(workflow=row, step_name="durably_execute$second")
    assert not counter.exists()  # the second body never ran


def test_a_continuation_delivered_after_the_cancel_runs_nothing(qcluster, tmp_path):
    started, counter = tmp_path / "started", tmp_path / "counter"
    cluster = qcluster()
    SlowThenSecond.perform_later("e2e-wait", started=str(started), counter=str(counter), wait=2)

    def scheduled():  # the first pass ran, recorded its wait and released
        row = Workflow.objects.get(key="e2e-wait")
        waiting = ExecutionLog.objects.filter(workflow=row, step_name="wait$pause").exists()
        return waiting and row.state == "idle" and row.locked_by is None

    wait_for(scheduled, timeout=30, message="the first pass to schedule its continuation")
    SlowThenSecond.cancel("e2e-wait", reason="order closed")

    def both_passes_processed():  # the first pass, then the continuation, 2 s later
        return len(PASSES.findall(cluster.log_text())) >= 2

    wait_for(both_passes_processed, timeout=30, message="the continuation to be delivered")
    row = Workflow.objects.get(key="e2e-wait")
    assert (row.state, row.next_run_at, row.locked_by) == ("cancelled", None, None)
    assert not ExecutionLog.objects.filter(workflow=row, step_name="durably_execute$second")
    assert not counter.exists(), cluster.log_tail()
