"""The KitchenSink workflow end to end: its INSERT counts over a whole life and the completed-step
preload with a gate."""

from datetime import datetime, timedelta

import pytest

from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.steps import StepLogs
from tests import workflows_waits as ww
from tests.core_sql import capture, statements
from tests.waits_support import WORKFLOW_TABLE, refresh, step_names

pytestmark = pytest.mark.django_db

KITCHEN_SINK_STEPS = [
    "wait_until$payment_confirmed",
    "wait$fraud_check_delay",
    "durably_execute$process_order",
    "durably_execute$complete_order",
    "$workflow_completion$",
]


def inject(monkeypatch, *points):
    """Fault injection: ``KitchenSink.fault(point)`` raises InjectedError once per named point."""
    pending = set(points)

    def fault(self, point):
        if point in pending:
            pending.discard(point)
            raise ww.InjectedError(f"injected at {point}")

    monkeypatch.setattr(ww.KitchenSink, "fault", fault)
    return pending


def test_happy_path(chrono_forge_env):
    # 1
    start = chrono_forge_env.now
    wf = ww.KitchenSink.perform_later("sink", kwarg="durable", options={"option1": 1})
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed"
    assert (wf.key, wf.job_class) == ("sink", "tests.workflows_waits.KitchenSink")
    assert wf.kwargs == {"kwarg": "durable"} and wf.options == {"option1": 1}
    assert {"order_id", "processed_at", "completed_at"} <= set(wf.context)
    assert wf.started_at == start and wf.completed_at is not None
    assert wf.locked_at is None and wf.locked_by is None and wf.next_run_at is None
    # the polls at 0, 0.1, 0.2 s (false, false, true), then the 1 s wait from 0.2 s
    assert wf.completed_at == start + timedelta(seconds=1.2)
    assert datetime.fromisoformat(wf.context["processed_at"]) == start + timedelta(seconds=1.2)
    assert ww.CALLS["KitchenSink.payment_confirmed"] == 3


def test_five_logs_in_order_and_no_errors(chrono_forge_env):
    # 2
    wf = ww.KitchenSink.perform_later("sink", kwarg="durable")
    chrono_forge_env.run_all()
    assert step_names(wf) == KITCHEN_SINK_STEPS
    assert ErrorLog.objects.count() == 0
    assert (
        ExecutionLog.objects.get(step_name="wait_until$payment_confirmed").metadata["result"]
        is True
    )


def test_transient_error_before_process_order(chrono_forge_env, monkeypatch):
    # 3: [FAULT crash-mid-step] -> same 5 logs, exactly 1 error log of the injected class.
    left = inject(monkeypatch, "before_process_order")
    wf = ww.KitchenSink.perform_later("sink", kwarg="durable")
    chrono_forge_env.run_all()
    assert left == set()  # the fault did fire
    assert refresh(wf).state == "completed"
    assert step_names(wf) == KITCHEN_SINK_STEPS
    assert list(ErrorLog.objects.values_list("error_class", flat=True)) == [
        "tests.workflows_waits.InjectedError"
    ]
    assert ww.CALLS["KitchenSink.process_order"] == 1


def test_transient_errors_at_two_points(chrono_forge_env, monkeypatch):
    # 4
    left = inject(monkeypatch, "before_process_order", "before_complete_order")
    wf = ww.KitchenSink.perform_later("sink", kwarg="durable")
    chrono_forge_env.run_all()
    assert left == set()
    assert refresh(wf).state == "completed"
    assert step_names(wf) == KITCHEN_SINK_STEPS
    classes = set(ErrorLog.objects.values_list("error_class", flat=True))
    assert ErrorLog.objects.count() >= 1 and classes == {"tests.workflows_waits.InjectedError"}
    assert ww.CALLS["KitchenSink.process_order"] == 1
    assert ww.CALLS["KitchenSink.complete_order"] == 1


def test_draining_only_due_jobs_parks_on_a_wait(chrono_forge_env):
    # 9
    wf = ww.KitchenSink.perform_later("sink", kwarg="durable")
    chrono_forge_env.run_due()
    wf = refresh(wf)
    assert wf.state in ("idle", "running") and wf.state == "idle"
    assert wf.next_run_at is not None and wf.next_run_at > chrono_forge_env.now
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    names = step_names(wf)
    assert "wait_until$payment_confirmed" in names and "wait$fraud_check_delay" in names


def test_whole_life_inserts_once_per_row(chrono_forge_env):
    # over the KitchenSink's whole life (several resumes), execution-log INSERTs ==
    # rows
    # == 5 and no INSERT is attempted for an existing row; exactly 1 INSERT into workflows.
    with capture() as queries:
        wf = ww.KitchenSink.perform_later("sink", kwarg="durable")
        passes = chrono_forge_env.run_all()
    assert passes >= 4  # three polls, the wait, ... several resumes
    inserts = statements(queries, "INSERT")
    assert len(inserts) == 5 == ExecutionLog.objects.filter(workflow=wf).count()
    assert len(statements(queries, "INSERT", WORKFLOW_TABLE)) == 1
    # each INSERT names a different step
    for name in KITCHEN_SINK_STEPS:
        assert sum(f"'{name}'" in sql or name in sql for sql in inserts) >= 1


# -- the completed-step preload, with a continue_if gate -------------------------------------------


def gate_parked(chrono_forge_env, key, n):
    wf = ww.ManyStepsGate.perform_later(key, n=n)
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "idle" and wf.next_run_at is None  # parked on the closed gate
    return wf


def resume_selects(chrono_forge_env, wf):
    with capture() as queries:
        wf.resume()
        chrono_forge_env.run_all()
    assert refresh(wf).state == "idle"
    return statements(queries, "SELECT")


def test_resume_selects_are_identical_for_3_and_25_completed_steps(chrono_forge_env):
    # 239
    small = gate_parked(chrono_forge_env, "n3", 3)
    large = gate_parked(chrono_forge_env, "n25", 25)
    assert ExecutionLog.objects.filter(workflow=large).count() == 25 + 1 + 2 + 1
    small_selects = resume_selects(chrono_forge_env, small)
    large_selects = resume_selects(chrono_forge_env, large)
    assert len(small_selects) == len(large_selects) == 1  # the one bulk read, nothing per step
    assert ww.CALLS["step"] == 28


def test_bulk_read_includes_the_coordination_log_and_excludes_repetitions(chrono_forge_env):
    # 240
    wf = gate_parked(chrono_forge_env, "n3", 3)
    names = set(StepLogs(wf.pk).names())
    assert {"durably_execute$step_0", "durably_repeat$poll", "continue_if$gate_open"} <= names
    repetitions = ExecutionLog.objects.filter(
        workflow=wf, step_name__startswith="durably_repeat$poll$"
    )
    assert repetitions.count() == 2
    assert not names & set(repetitions.values_list("step_name", flat=True))
    (bulk_read,) = resume_selects(chrono_forge_env, wf)
    assert "REGEXP" in bulk_read.upper() or "~" in bulk_read  # the exclusion is in the SQL itself


def test_kitchen_sink_row_lookups_are_select_first(chrono_forge_env):
    # 231: an existing step never triggers an INSERT attempt: a replay of the finished run writes
    # none.
    wf = ww.KitchenSink.perform_later("sink", kwarg="durable")
    chrono_forge_env.run_all()
    wf.execution_logs.filter(step_name="$workflow_completion$").delete()
    Workflow.objects.filter(pk=wf.pk).update(state="idle", completed_at=None)
    with capture() as queries:
        ww.KitchenSink.perform_later("sink")
        chrono_forge_env.run_all()
    assert len(statements(queries, "INSERT")) == 1  # only the new completion marker
    assert ww.CALLS["KitchenSink.process_order"] == 1
