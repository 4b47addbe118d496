"""``durably_execute(..., timeout=)``: an attempt running past its timeout counts as a failed
attempt (StepTimeout) against the step's retry policy — interrupted in the main thread, counted
when it returns late elsewhere, and recorded by the next pass when its worker died in it."""

from __future__ import annotations

import re
import signal
import threading

import pytest
from django.db import connections

from chrono_forge.exceptions import InvalidStepArgument
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_poison as p
from tests.core_sql import capture
from tests.helpers import pass_in_a_process_that_dies, reap_and_run
from tests.workflows_timeout import QuickStep, SlowStep

SLOW = "durably_execute$slow"
POISON = "durably_execute$poison"
TIMEOUT = "chrono_forge.exceptions.StepTimeout"


def errors(wf: Workflow) -> list[tuple[str, int, str]]:
    rows = ErrorLog.objects.filter(workflow=wf).order_by("id")
    return list(rows.values_list("step_name", "attempt", "error_class"))


def step(wf: Workflow, name: str = SLOW) -> ExecutionLog:
    return ExecutionLog.objects.get(workflow=wf, step_name=name)


@pytest.fixture
def no_alarm():
    """Every test starts and must end with SIGALRM's default handler and no timer armed."""
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    yield
    leftover = (signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL))
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert leftover == (signal.SIG_DFL, (0.0, 0.0))


# -- in process: the main thread is interrupted ----------------------------------------------------
@pytest.mark.django_db
def test_a_body_running_past_its_timeout_is_interrupted_and_the_step_fails(
    chrono_forge_env, no_alarm
):
    wf = SlowStep.perform_later("interrupted", timeout=0.2, sleep=30)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "stalled"
    assert p.executions("slow") == 1 and p.executions("slow_finished") == 0  # the sleep was cut
    assert p.executions("after") == 0
    assert errors(wf) == [(SLOW, 1, TIMEOUT)]
    log = step(wf)
    assert (log.state, log.attempts, log.error_class) == ("failed", 1, TIMEOUT)
    assert log.error_message == f"{SLOW}: attempt 1 ran past its timeout of 0.2 s (interrupted)"


@pytest.mark.django_db
def test_a_timed_out_attempt_is_retried_per_the_policy_and_the_retry_completes(
    chrono_forge_env, no_alarm
):
    wf = SlowStep.perform_later("retried", timeout=0.2, sleep=30, slow_attempts=1, attempts=3)
    chrono_forge_env.run_due()
    wf.refresh_from_db()
    assert wf.state == "idle" and wf.next_run_at is not None  # the retry is scheduled
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["result"] == 2
    assert errors(wf) == [(SLOW, 1, TIMEOUT)]
    log = step(wf)
    assert (log.state, log.attempts, log.result) == ("completed", 2, 2)
    assert (p.executions("slow_finished"), p.executions("after")) == (0, 1)


@pytest.mark.django_db
@pytest.mark.parametrize(("retry_on", "state"), [("timeout", "idle"), ("key", "stalled")])
def test_a_step_timeout_is_a_timeout_error_to_the_retry_policy(
    chrono_forge_env, no_alarm, retry_on, state
):
    wf = SlowStep.perform_later(f"policy-{retry_on}", timeout=0.1, attempts=3, retry_on=retry_on)
    chrono_forge_env.run_due()
    wf.refresh_from_db()
    assert wf.state == state  # retried when the policy retries TimeoutError, else given up
    assert errors(wf) == [(SLOW, 1, TIMEOUT)]


@pytest.mark.django_db
def test_a_step_within_its_timeout_stores_its_result_and_disarms_the_alarm(
    chrono_forge_env, no_alarm
):
    wf = SlowStep.perform_later("quick", timeout="30 s as a timedelta", slow_attempts=0)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["result"] == 1
    assert errors(wf) == []
    # no_alarm checks on the way out that no timer and no handler were left behind


@pytest.mark.django_db
def test_an_alarm_already_running_is_restored_with_the_rest_of_its_delay(
    chrono_forge_env, no_alarm
):
    """django-q2 arms SIGALRM for its task timeout around the whole pass: the step's shorter alarm
    interrupts the body, then django-q2's handler and its remaining delay are put back."""
    fired = []

    def outer(signum, frame):
        fired.append(signum)

    signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        wf = SlowStep.perform_later("shared-timer", timeout=0.2, sleep=30)
        chrono_forge_env.run_due()
        handler = signal.getsignal(signal.SIGALRM)
        remaining, _interval = signal.getitimer(signal.ITIMER_REAL)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert handler is outer and 0 < remaining < 60
    assert fired == []  # the outer alarm did not go off early
    assert p.executions("slow_finished") == 0  # the step's own alarm cut the sleep
    wf.refresh_from_db()
    assert errors(wf) == [(SLOW, 1, TIMEOUT)]


class OuterTimeout(Exception):
    pass


@pytest.mark.django_db
def test_an_alarm_due_before_the_step_timeout_is_left_to_its_owner(chrono_forge_env, no_alarm):
    def outer(signum, frame):
        raise OuterTimeout("the task's own timeout")

    signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        wf = SlowStep.perform_later("outer-first", timeout=20, sleep=30)
        chrono_forge_env.run_due()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    wf.refresh_from_db()
    assert errors(wf) == [(SLOW, 1, "tests.test_step_timeout.OuterTimeout")]
    assert p.executions("slow_finished") == 0


# -- another thread: not interrupted, a late return counts as timed out ----------------------------
@pytest.mark.django_db(transaction=True)
def test_outside_the_main_thread_a_late_return_counts_as_timed_out(chrono_forge_env, no_alarm):
    wf = SlowStep.perform_later("threaded", timeout=0.05, sleep=0.3)
    failures: list[BaseException] = []

    def work():
        try:
            chrono_forge_env.run_due()
        except BaseException as error:  # noqa: BLE001  (reported to the test below)
            failures.append(error)
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and failures == []
    wf.refresh_from_db()
    assert wf.state == "stalled"
    assert p.executions("slow_finished") == 1  # nothing interrupted the body
    assert errors(wf) == [(SLOW, 1, TIMEOUT)]
    message = step(wf).error_message
    assert message.startswith(f"{SLOW}: attempt 1 ran past its timeout of 0.05 s (returned after ")
    assert "result" not in wf.context  # the late result was not stored


# -- a worker that died in the attempt: the next pass records the timeout --------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("timeout", "error_class"),
    [(60, TIMEOUT), (86_400, "chrono_forge.exceptions.StepAttemptLost")],
)
def test_an_attempt_left_unfinished_past_its_timeout_is_recorded_as_timed_out(
    chrono_forge_env, tmp_path, timeout, error_class
):
    """The reaper hands the next pass the lock once it is stale (minutes after the attempt
    started): an attempt older than its timeout is a StepTimeout, a younger one a lost attempt."""
    counter = tmp_path / "executions"
    wf = p.DyingStep.perform_later(
        f"dead-{timeout}", how="os_exit", deaths=1, counter=str(counter), timeout=timeout
    )
    chrono_forge_env.drop_pending()
    assert pass_in_a_process_that_dies(f"dead-{timeout}") == 1
    reap_and_run(chrono_forge_env)
    assert errors(wf) == [(POISON, 1, error_class)]
    if error_class == TIMEOUT:
        message = ErrorLog.objects.get(workflow=wf).error_message
        assert f"attempt 1 ran past its timeout of {timeout} s (found unfinished by" in message
    chrono_forge_env.run_all()  # the retry completes
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["result"] == 2


# -- bad input: a clear error, nothing recorded ---------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "timeout", [0, -1, "zero timedelta", "nan", "inf", "a string", "a list"], ids=str
)
def test_a_bad_timeout_stalls_the_run_before_the_step_is_recorded(
    chrono_forge_env, no_alarm, timeout
):
    wf = SlowStep.perform_later(f"bad-{timeout!r}", timeout=timeout, slow_attempts=0)
    with pytest.raises(InvalidStepArgument, match=re.escape(f"{SLOW}: timeout ")):
        chrono_forge_env.run_all()  # a programming error: it stalls the run and propagates
    wf.refresh_from_db()
    assert wf.state == "stalled"
    assert not ExecutionLog.objects.filter(workflow=wf, step_name=SLOW).exists()
    assert p.executions("slow") == 0
    [(step_name, error_class, message)] = ErrorLog.objects.filter(workflow=wf).values_list(
        "step_name", "error_class", "error_message"
    )
    assert error_class == "chrono_forge.exceptions.InvalidStepArgument"
    assert message.startswith(f"{SLOW}: timeout ")


# -- cost ------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_timeout_adds_no_statement_to_a_step(chrono_forge_env, no_alarm):
    counts = []
    for key, timeout in (("plain", None), ("bounded", 30)):
        QuickStep.perform_later(key, timeout=timeout)
        with capture() as captured:
            chrono_forge_env.run_all()
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]
    assert Workflow.objects.filter(state="completed").count() == 2
