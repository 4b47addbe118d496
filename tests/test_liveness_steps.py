"""A failed step replays its failure; a step that takes its worker down is counted and converges
to a stalled workflow (never a silent idle, never a loop)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django_q.exceptions import TimeoutException

from chrono_forge.errors import error_class_name
from chrono_forge.exceptions import WaitConditionNotMet
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.tasks import run_workflow
from tests import workflows_poison as p
from tests.core_sql import ERROR_LOG, EXECUTION_LOG, SqlLog
from tests.helpers import DYING, pass_in_a_process_that_dies, reap_and_run


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


# -- a step that takes its worker down -------------------------------------------------------------
POISON = "durably_execute$poison"


def run_expecting_exit(env, error_class=SystemExit) -> None:
    """Run the due continuations; the first that raises ``error_class`` stops the loop (the worker
    is gone), as it would stop a real worker."""
    with pytest.raises(error_class):
        env.run_due()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("how", "error_class", "cause"),
    [
        ("system_exit", SystemExit, "SystemExit: 3"),
        ("keyboard_interrupt", KeyboardInterrupt, "KeyboardInterrupt"),
        (
            "django_q_timeout",
            TimeoutException,
            "django_q.exceptions.TimeoutException: Task exceeded maximum timeout value (2 seconds)",
        ),
    ],
)
def test_a_body_exiting_its_worker_is_recorded_retried_then_stalls(
    chrono_forge_env, how, error_class, cause
):
    wf = p.DyingStep.perform_later("exit", how=how)
    for attempt in (1, 2):
        run_expecting_exit(chrono_forge_env, error_class)
        wf.refresh_from_db()
        # recorded, re-raised, and the run is scheduled (the policy's 1 s backoff): not idle
        assert wf.state == "idle" and wf.locked_by is None
        assert wf.next_run_at == chrono_forge_env.now + timedelta(seconds=1)
        assert [run.run_at for run in chrono_forge_env.pending] == [wf.next_run_at]
        step = log(wf, POISON)
        assert (step.state, step.attempts) == ("pending", attempt)
        assert [(e.attempt, e.error_class) for e in errors(wf)][-1] == (
            attempt,
            error_class_name(error_class()),
        )
        chrono_forge_env.advance(1)
    run_expecting_exit(chrono_forge_env, error_class)
    wf.refresh_from_db()
    assert wf.state == "stalled" and wf.next_run_at is None and chrono_forge_env.pending == []
    step = log(wf, POISON)
    assert (step.state, step.attempts) == ("failed", 3)
    assert step.error_class == "chrono_forge.exceptions.StepAttemptLost"
    assert step.error_message == f"worker died during attempt 3 ({cause})"
    assert [e.attempt for e in errors(wf, POISON)] == [1, 2, 3]
    assert p.executions("poison") == 3 and p.executions("after") == 0

    # django-q2 redelivers a task whose worker died: the stalled run does not run the body again
    run_workflow(DYING, "exit")
    assert p.executions("poison") == 3
    # an operator retry gives the step a fresh budget
    wf.refresh_from_db()
    Workflow.objects.filter(pk=wf.pk).update(kwargs={**wf.kwargs, "deaths": 3})
    p.DyingStep.retry_now("exit")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["result"] == 4
    assert log(wf, POISON).attempts == 1


@pytest.mark.django_db
def test_redeliveries_of_a_dying_step_converge_to_stalled(chrono_forge_env):
    """The worker's queue entry comes back (django-q2 redelivers a task whose worker died) besides
    the continuation the step scheduled: every execution is counted, whichever delivery ran it."""
    wf = p.DyingStep.perform_later("redelivered")
    run_expecting_exit(chrono_forge_env)
    with pytest.raises(SystemExit):
        run_workflow(DYING, "redelivered")  # the first delivery again, before the retry is due
    chrono_forge_env.advance(1)
    run_expecting_exit(chrono_forge_env)
    wf.refresh_from_db()
    assert wf.state == "stalled" and p.executions("poison") == 3
    for _ in range(3):
        run_workflow(DYING, "redelivered")
    chrono_forge_env.run_all()
    assert p.executions("poison") == 3
    assert [e.attempt for e in errors(wf, POISON)] == [1, 2, 3]


@pytest.mark.django_db
def test_exiting_outside_a_step_leaves_the_run_scheduled(chrono_forge_env):
    p.FLAGS["exit"] = True
    wf = p.ExitsInPerform.perform_later("outside")
    run_expecting_exit(chrono_forge_env)
    wf.refresh_from_db()
    assert wf.state == "idle" and wf.locked_by is None and wf.next_run_at is not None
    assert len(chrono_forge_env.pending) == 1
    [error] = errors(wf)
    assert (error.step_name, error.error_class) == (None, "SystemExit")
    p.FLAGS["exit"] = False
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert (p.executions("first"), p.executions("second")) == (1, 1)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["wait_until", "continue_if"])
def test_a_condition_exiting_its_worker_is_recorded_and_stalls(chrono_forge_env, kind):
    wf = p.DyingCondition.perform_later("cond", kind=kind)
    run_expecting_exit(chrono_forge_env)
    wf.refresh_from_db()
    assert wf.state == "stalled" and chrono_forge_env.pending == []
    step = log(wf, f"{kind}$ready")
    assert (step.state, step.attempts) == ("failed", 1)
    [error] = errors(wf)
    assert (error.step_name, error.attempt, error.error_class) == (f"{kind}$ready", 1, "SystemExit")
    run_workflow("tests.workflows_poison.DyingCondition", "cond")  # a redelivery: nothing runs
    assert p.executions("ready") == 1


@pytest.mark.django_db
def test_a_tick_exiting_its_worker_is_given_up_after_its_budget_and_the_schedule_goes_on(
    chrono_forge_env,
):
    wf = p.DyingTick.perform_later("ticks", deaths=3)
    for _ in range(3):
        run_expecting_exit(chrono_forge_env)
        wf.refresh_from_db()
        assert wf.state == "idle" and wf.next_run_at is not None  # scheduled, never idle-only
        chrono_forge_env.travel_to(wf.next_run_at)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["ticks"] == 2
    assert p.executions("tick") == 5  # 3 deaths of the first tick, then two good ticks
    reps = ExecutionLog.objects.filter(
        workflow=wf, step_name__startswith="durably_repeat$tick$"
    ).order_by("id")
    assert [(r.state, r.attempts) for r in reps] == [
        ("failed", 3),
        ("completed", 1),
        ("completed", 1),
    ]
    assert [e.attempt for e in errors(wf)] == [1, 2, 3]


@pytest.mark.django_db
def test_a_tick_exiting_its_worker_stalls_a_fail_workflow_schedule(chrono_forge_env):
    wf = p.DyingTick.perform_later("stall", on_error="fail_workflow")
    for _ in range(3):
        run_expecting_exit(chrono_forge_env)
        wf.refresh_from_db()
        if wf.next_run_at:
            chrono_forge_env.travel_to(wf.next_run_at)
    assert wf.state == "stalled" and chrono_forge_env.pending == []
    coordination = log(wf, "durably_repeat$tick")
    assert coordination.state == "failed"
    assert coordination.error_class == "chrono_forge.exceptions.StepAttemptLost"
    assert p.executions("tick") == 3


# -- a hard kill: the process is gone, nothing of chrono_forge runs after the body ----------------
@pytest.mark.django_db(transaction=True)
def test_a_hard_kill_mid_body_counts_the_attempt_and_the_retry_completes(
    chrono_forge_env, tmp_path
):
    counter = tmp_path / "executions"
    wf = p.DyingStep.perform_later("killed", how="os_exit", deaths=1, counter=str(counter))
    chrono_forge_env.drop_pending()  # the first delivery is taken by the child instead
    assert pass_in_a_process_that_dies("killed") == 1
    wf.refresh_from_db()
    assert wf.state == "running" and wf.locked_by  # the lock stays held, nothing is scheduled
    assert log(wf, POISON).attempts == 1 and errors(wf) == []

    reap_and_run(chrono_forge_env)  # the lost attempt is recorded, the retry scheduled
    [lost] = errors(wf)
    assert (lost.step_name, lost.attempt) == (POISON, 1)
    assert lost.error_class == "chrono_forge.exceptions.StepAttemptLost"
    assert lost.error_message.startswith("worker died during attempt 1 (it started and never")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["result"] == 2
    step = log(wf, POISON)
    assert (step.state, step.attempts) == ("completed", 2)
    assert len(counter.read_text().splitlines()) == 2


@pytest.mark.django_db(transaction=True)
def test_a_step_that_keeps_killing_its_worker_stalls_after_max_attempts(chrono_forge_env, tmp_path):
    counter = tmp_path / "executions"
    wf = p.DyingStep.perform_later("poison", how="os_exit", counter=str(counter))
    chrono_forge_env.drop_pending()
    for attempt in (1, 2, 3):
        assert pass_in_a_process_that_dies("poison") == 1
        reap_and_run(chrono_forge_env)  # charges the lost attempt (no body runs in this process)
        wf.refresh_from_db()
        assert log(wf, POISON).attempts == attempt
        assert [e.attempt for e in errors(wf)] == list(range(1, attempt + 1))
        if attempt < 3:
            assert wf.state == "idle" and wf.next_run_at is not None  # the retry is scheduled
            chrono_forge_env.drop_pending()  # ... and the next child process takes it
    assert wf.state == "stalled"
    step = log(wf, POISON)
    assert (step.state, step.error_class) == ("failed", "chrono_forge.exceptions.StepAttemptLost")
    assert len(counter.read_text().splitlines()) == 3
    assert pass_in_a_process_that_dies("poison") == 0  # stalled: a late delivery runs nothing
    assert len(counter.read_text().splitlines()) == 3


# -- what telling a failed attempt from a lost one costs ------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", [1, 3], ids=["retried", "given-up"])
def test_a_failed_attempt_costs_one_error_insert_and_one_step_update_in_one_commit(
    chrono_forge_env, attempt
):
    """The attempt is marked finished in the UPDATE the failure path writes anyway (retry counts,
    failed state): nothing is added to the success path, whose budgets tests/test_core_queries.py
    pins."""
    wf = p.AlwaysDeclined.perform_later("cost")
    for _ in range(attempt - 1):
        chrono_forge_env.run_due()
        chrono_forge_env.advance(1)
    with SqlLog() as sql:
        chrono_forge_env.run_due()
    statements = sql.data_statements
    [error] = [i for i, s in enumerate(statements) if s.kind == "INSERT" and s.table == ERROR_LOG]
    step_update = error + 1
    assert (statements[step_update].kind, statements[step_update].table) == (
        "UPDATE",
        EXECUTION_LOG,
    )
    assert statements[error].in_atomic and statements[step_update].in_atomic
    assert not any(error < point <= step_update for point in sql.commit_points), sql.dump()
    assert sql.count("UPDATE", EXECUTION_LOG) == (1 if attempt == 1 else 2)  # (+ the attempt bump)
    step = log(wf, "durably_execute$charge")
    assert step.metadata["failed_attempt"] == attempt
    assert step.state == ("pending" if attempt == 1 else "failed")
