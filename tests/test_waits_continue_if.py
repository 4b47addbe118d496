"""continue_if (event gate, no polling) and the cost of its first evaluation."""

import pytest

from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_waits as ww
from tests.core_sql import capture, statements
from tests.waits_support import attempt_updates, log, refresh, step_names

pytestmark = pytest.mark.django_db


def test_condition_already_true_completes_in_one_pass(chrono_forge_env):
    # 56
    ww.FLAGS["open"] = True
    wf = ww.SimpleGate.perform_later("g")
    assert chrono_forge_env.run_all() == 1
    assert refresh(wf).state == "completed"
    assert ww.CALLS == {"condition_met": 1, "after_gate": 1}
    entry = log(wf, "continue_if$condition_met")
    assert entry.state == "completed" and entry.metadata["result"] is True and entry.attempts == 1


def test_false_condition_parks_with_nothing_scheduled(chrono_forge_env):
    # 57: idle, checked once, 0 enqueued jobs, log pending with attempts 1; next_run_at None.
    wf = ww.SimpleGate.perform_later("g")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "idle" and wf.next_run_at is None and wf.locked_by is None
    assert ww.CALLS == {"condition_met": 1}
    assert chrono_forge_env.pending == []
    entry = log(wf, "continue_if$condition_met")
    assert (entry.state, entry.attempts) == ("pending", 1)
    assert entry.metadata == {"condition": "condition_met", "name": None}


@pytest.mark.parametrize("wake", ["perform_later", "resume"])
def test_wake_up_after_the_event_completes_on_the_same_row(chrono_forge_env, wake):
    # 58 / 60: perform_later(key) or Workflow.resume() -> checked exactly twice, the same log row
    # completes.
    wf = ww.SimpleGate.perform_later("g")
    chrono_forge_env.run_all()
    row_id = log(wf, "continue_if$condition_met").pk
    ww.FLAGS["open"] = True
    if wake == "perform_later":
        ww.SimpleGate.perform_later("g")
    else:
        refresh(wf).resume()
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    assert ww.CALLS == {"condition_met": 2, "after_gate": 1}
    entries = ExecutionLog.objects.filter(workflow=wf, step_name__startswith="continue_if$")
    assert [(e.pk, e.state, e.attempts, e.metadata["result"]) for e in entries] == [
        (row_id, "completed", 2, True)
    ]


def test_a_wake_up_while_still_closed_parks_again(chrono_forge_env):
    wf = ww.SimpleGate.perform_later("g")
    chrono_forge_env.run_all()
    refresh(wf).resume()
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "idle" and wf.next_run_at is None and chrono_forge_env.pending == []
    assert log(wf, "continue_if$condition_met").attempts == 2
    assert ww.CALLS == {"condition_met": 2}


def test_raising_condition_stalls_without_retry(chrono_forge_env):
    # 59
    wf = ww.RaisingGate.perform_later("g")
    chrono_forge_env.run_all()
    assert refresh(wf).state == "stalled"
    entry = log(wf, "continue_if$condition_met")
    assert entry.state == "failed" and entry.attempts == 1
    assert entry.error_class == "RuntimeError" and "gate condition broke" in entry.error_message
    assert ww.CALLS == {"condition_met": 1}
    assert chrono_forge_env.pending == []
    error = ErrorLog.objects.get()
    assert (error.error_class, error.step_name, error.attempt) == (
        "RuntimeError",
        "continue_if$condition_met",
        1,
    )


def test_steps_around_the_gate_run_once_in_order(chrono_forge_env):
    # 61
    wf = ww.Gate.perform_later("g")
    chrono_forge_env.run_all()
    assert ww.CALLS == {"step1": 1, "condition_met": 1}
    ww.FLAGS["open"] = True
    ww.Gate.perform_later("g")
    chrono_forge_env.run_all()
    assert ww.CALLS == {"step1": 1, "condition_met": 2, "step3": 1}
    assert step_names(wf) == [
        "durably_execute$step1",
        "continue_if$condition_met",
        "durably_execute$step3",
        "$workflow_completion$",
    ]


def test_two_gates_in_sequence(chrono_forge_env):
    # 62 / 64: idle at gate 1, idle at gate 2, completed; names and conditions stored per gate.
    wf = ww.TwoGates.perform_later("g")
    chrono_forge_env.run_all()
    assert refresh(wf).state == "idle" and log(wf, "continue_if$first_gate").state == "pending"
    ww.FLAGS["first"] = True
    ww.TwoGates.perform_later("g")
    chrono_forge_env.run_all()
    first, second = log(wf, "continue_if$first_gate"), log(wf, "continue_if$second_gate")
    assert refresh(wf).state == "idle"
    assert (first.state, second.state) == ("completed", "pending")
    assert first.metadata == {"condition": "first_open", "name": "first_gate", "result": True}
    assert second.metadata == {"condition": "second_open", "name": "second_gate"}
    ww.FLAGS["second"] = True
    ww.TwoGates.perform_later("g")
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    assert ww.CALLS == {"step1": 1, "step2": 1, "step3": 1}


def test_custom_name(chrono_forge_env):
    # 63
    wf = ww.NamedGate.perform_later("g")
    chrono_forge_env.run_all()
    entry = log(wf, "continue_if$custom_step_name")
    assert entry.metadata == {
        "condition": "condition_met",
        "name": "custom_step_name",
        "result": True,
    }


def test_first_evaluation_is_recorded_in_the_insert(chrono_forge_env):
    # the first evaluation -> 1 INSERT with attempts 1, 0 attempt-only UPDATEs;
    # a re-evaluation after a not-met halt bumps attempts with one UPDATE.
    wf = ww.SimpleGate.perform_later("g")
    with capture() as first:
        chrono_forge_env.run_all()
    assert len(statements(first, "INSERT")) == 1
    assert attempt_updates(first) == [] and statements(first, "UPDATE") == []
    with capture() as again:
        ww.SimpleGate.perform_later("g")
        chrono_forge_env.run_all()
    assert statements(again, "INSERT") == [] and len(attempt_updates(again)) == 1
    ww.FLAGS["open"] = True
    with capture() as met:
        ww.SimpleGate.perform_later("g")
        chrono_forge_env.run_all()
    # the met re-evaluation: one UPDATE (attempt + completion together), plus the completion marker
    # INSERT
    assert len(attempt_updates(met)) == 1 and len(statements(met, "UPDATE")) == 1
    assert refresh(wf).state == "completed"


def test_operator_retry_reevaluates_a_raising_condition(chrono_forge_env, monkeypatch):
    wf = ww.RaisingGate.perform_later("g")
    chrono_forge_env.run_all()
    monkeypatch.setattr(ww.RaisingGate, "condition_met", lambda self: True)
    ww.RaisingGate.retry_now("g")
    assert refresh(wf).state == "completed"
    entry = log(wf, "continue_if$condition_met")
    assert entry.state == "completed" and entry.metadata["result"] is True
    assert Workflow.objects.get().state == "completed"


def test_a_caught_gate_failure_replays_without_evaluating_again(chrono_forge_env):
    wf = ww.CaughtGateFailure.perform_later("g")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["caught"] == 2
    assert ww.CALLS == {"condition_met": 1}
    assert ErrorLog.objects.count() == 1
