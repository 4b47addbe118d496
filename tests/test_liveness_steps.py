"""A failed step replays its failure; a step that takes its worker down is counted and converges
to a stalled workflow (never a silent idle, never a loop)."""

from __future__ import annotations

import pytest

from chrono_forge.exceptions import WaitConditionNotMet
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_poison as p
from tests.workflows_poison import reset_poison  # noqa: F401  (autouse)


def log(wf: Workflow, name: str) -> ExecutionLog:
    return ExecutionLog.objects.get(workflow=wf, step_name=name)


def errors(wf: Workflow, step_name: str | None = None) -> list[ErrorLog]:
    rows = ErrorLog.objects.filter(workflow=wf).order_by("id")
    return list(rows if step_name is None else rows.filter(step_name=step_name))


# -- a failed step replays its failure -------------------------------------------------------------
@pytest.mark.django_db
def test_a_caught_failed_step_is_not_run_again_and_replays_the_same_failure(chrono_forge_env):
    wf = p.CaughtStep.perform_later("caught")
    chrono_forge_env.run_due()  # charge gives up, fallback runs, the wait halts the pass
    wf.refresh_from_db()
    assert wf.state == "idle" and wf.next_run_at is not None
    assert (p.executions("charge"), p.executions("fallback")) == (1, 1)

    chrono_forge_env.run_all()  # the wait is over: perform() replays from the top
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert p.executions("charge") == 1  # the given-up body never ran again
    assert p.executions("fallback") == 1  # and the path did not change
    charge = log(wf, "durably_execute$charge")
    assert (charge.state, charge.attempts) == ("failed", 1)
    assert len(p.CAUGHT) == 2 and p.CAUGHT[0] == p.CAUGHT[1]  # the replay raised the same failure
    assert p.CAUGHT[0] == "durably_execute$charge failed after 1 attempt(s): card declined"
    assert wf.context["caught"] == 2 and "charged" not in wf.context
    assert [e.attempt for e in errors(wf, "durably_execute$charge")] == [1]  # recorded once


@pytest.mark.django_db
def test_an_operator_retry_gives_a_failed_step_a_fresh_budget(chrono_forge_env):
    wf = p.CaughtStep.perform_later("retried", gate=True)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "stalled"  # the gate step gave up, uncaught
    assert (p.executions("charge"), p.executions("gate")) == (1, 1)

    p.FLAGS.update(charge_ok=True, gate_open=True)
    p.CaughtStep.retry_now("retried")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert (p.executions("charge"), p.executions("gate")) == (2, 2)  # both got a new attempt
    charge = log(wf, "durably_execute$charge")
    assert (charge.state, charge.attempts, charge.result) == ("completed", 1, "charged")
    assert wf.context["charged"] == "charged"
    assert "failure" not in charge.metadata  # the replayed failure went with the reset


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("workflow", "body", "step", "message"),
    [
        (
            p.CaughtWaitUntil,
            "ready",
            "wait_until$ready",
            "wait_until$ready: the condition ready raised Declined('status service down')",
        ),
        (
            p.CaughtGate,
            "approved",
            "continue_if$approved",
            "continue_if$approved: the condition approved raised "
            "Declined('approvals service down')",
        ),
        (
            p.CaughtRepeat,
            "tick",
            "durably_repeat$tick",
            "durably_repeat$tick$",  # the tick's own step name (its scheduled unix time follows)
        ),
    ],
    ids=["wait_until", "continue_if", "durably_repeat"],
)
def test_the_other_primitives_replay_their_failure_without_calling_user_code(
    chrono_forge_env, workflow, body, step, message
):
    wf = workflow.perform_later("caught")
    chrono_forge_env.run_due()
    assert (p.executions(body), p.executions("fallback")) == (1, 1)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert (p.executions(body), p.executions("fallback")) == (1, 1)
    assert log(wf, step).state == "failed"
    assert len(p.CAUGHT) == 2 and p.CAUGHT[0] == p.CAUGHT[1]
    assert p.CAUGHT[0].startswith(message)
    assert len(errors(wf)) == 1


@pytest.mark.django_db
def test_a_caught_timeout_replays_as_the_same_wait_condition_not_met(chrono_forge_env, monkeypatch):
    wf = p.CaughtTimeout.perform_later("timeout")
    replayed = []
    original = p.take_fallback

    def note(workflow, error):
        replayed.append(type(error))
        original(workflow, error)

    monkeypatch.setattr(p, "take_fallback", note)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and p.executions("ready") == 1
    assert replayed == [WaitConditionNotMet, WaitConditionNotMet]
    assert p.CAUGHT[0] == p.CAUGHT[1] and "was still false at the timeout" in p.CAUGHT[0]
