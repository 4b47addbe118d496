"""Workflow classes of the poison-step and failure-replay tests (module level, so their dotted
job_class imports in a qcluster worker too).

In-process counters live in ``EXECUTIONS`` (empty at the start of every test:
``tests.factories``); a body that must be counted across processes (a subprocess or a qcluster
worker that dies in it) appends a line to the file named by its ``counter`` argument instead.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from chrono_forge import DurableWorkflow, RetryPolicy
from chrono_forge.exceptions import ExecutionFailedError
from tests.factories import counter, per_test

#: body name -> how many times it ran in this process
EXECUTIONS = counter()
#: per-test switches read by the workflows
FLAGS: dict[str, object] = per_test({})
#: the messages of the failures perform() caught, in order
CAUGHT: list[str] = per_test([])

ONE_ATTEMPT = RetryPolicy(max_attempts=1)
#: three attempts, one second apart (no jitter: the tests know when the retry is due)
THREE_ATTEMPTS = RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)


executed = EXECUTIONS.hit


executions = EXECUTIONS.of


class Declined(Exception):
    pass


def take_fallback(workflow: DurableWorkflow, error: ExecutionFailedError) -> None:
    """What the workflows below do with a failure they catch: note it, run a fallback step."""
    CAUGHT.append(str(error))
    workflow.context["caught"] = workflow.context.get("caught", 0) + 1
    workflow.durably_execute(workflow.fallback)


# -- failure replay --------------------------------------------------------------------------------
class CaughtStep(DurableWorkflow):
    """A step that gives up on its first failure; perform() catches it, takes a fallback, waits,
    then (``gate=True``) runs a step that stalls until FLAGS["gate_open"]."""

    def perform(self, *, gate: bool = False):
        try:
            self.context["charged"] = self.durably_execute(self.charge, retry_policy=ONE_ATTEMPT)
        except ExecutionFailedError as error:
            take_fallback(self, error)
        self.wait(timedelta(seconds=10), "cool_down")
        if gate:
            self.durably_execute(self.gate, retry_policy=ONE_ATTEMPT)

    def charge(self):
        executed("charge")
        if not FLAGS.get("charge_ok"):
            raise Declined("card declined")
        return "charged"

    def fallback(self):
        executed("fallback")
        return "invoiced"

    def gate(self):
        executed("gate")
        if not FLAGS.get("gate_open"):
            raise Declined("gate closed")


class CaughtWaitUntil(DurableWorkflow):
    """A wait_until whose condition raises (not retried): caught, fallback, wait."""

    def perform(self):
        try:
            self.wait_until(self.ready, timeout=60, check_interval=5)
        except ExecutionFailedError as error:
            take_fallback(self, error)
        self.wait(timedelta(seconds=10), "cool_down")

    def ready(self):
        executed("ready")
        raise Declined("status service down")

    def fallback(self):
        executed("fallback")


class CaughtTimeout(DurableWorkflow):
    """A wait_until that times out: caught, fallback, wait."""

    def perform(self):
        try:
            self.wait_until(self.ready, timeout=0, check_interval=5)
        except ExecutionFailedError as error:
            take_fallback(self, error)
        self.wait(timedelta(seconds=10), "cool_down")

    def ready(self):
        executed("ready")
        return False

    def fallback(self):
        executed("fallback")


class CaughtGate(DurableWorkflow):
    """A continue_if whose condition raises: caught, fallback, wait."""

    def perform(self):
        try:
            self.continue_if(self.approved)
        except ExecutionFailedError as error:
            take_fallback(self, error)
        self.wait(timedelta(seconds=10), "cool_down")

    def approved(self):
        executed("approved")
        raise Declined("approvals service down")

    def fallback(self):
        executed("fallback")


class CaughtRepeat(DurableWorkflow):
    """A durably_repeat (on_error="fail_workflow") whose tick gives up: caught, fallback, wait."""

    def perform(self):
        try:
            self.durably_repeat(
                self.tick,
                every=60,
                till=lambda context: False,
                retry_policy=ONE_ATTEMPT,
                on_error="fail_workflow",
            )
        except ExecutionFailedError as error:
            take_fallback(self, error)
        self.wait(timedelta(seconds=10), "cool_down")

    def tick(self):
        executed("tick")
        raise Declined("sensor offline")

    def fallback(self):
        executed("fallback")


# -- poison steps ----------------------------------------------------------------------------------
def count_in(counter: str) -> int:
    """Append one line to the file ``counter`` (committed to disk before anything else happens,
    whatever kills the process next); returns how many lines it has."""
    path = Path(counter)
    with path.open("a") as handle:
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        os.fsync(handle.fileno())
    return len(path.read_text().splitlines())


class DyingStep(DurableWorkflow):
    """A step whose body takes its worker down for its first ``deaths`` executions, then returns.

    ``how``: "system_exit" (``sys.exit(3)``), "keyboard_interrupt", "django_q_timeout" (django-q2's
    TimeoutException, a SystemExit), "sleep" (30 s, to outlive a task timeout) or "os_exit"
    (``os._exit(1)``: no exception, no cleanup: the process is simply gone, as after SIGKILL or an
    OOM kill). ``timeout``: the step's timeout in seconds (None: none).
    """

    retry_policy = THREE_ATTEMPTS

    def perform(
        self,
        *,
        how: str = "system_exit",
        deaths: int = 1000,
        counter: str = "",
        timeout: float | None = None,
    ):
        self.how, self.deaths, self.counter = how, deaths, counter
        self.context["result"] = self.durably_execute(self.poison, timeout=timeout)
        self.durably_execute(self.after)

    def poison(self):
        n = count_in(self.counter) if self.counter else executed("poison")
        if n <= self.deaths:
            die(self.how)
        return n

    def after(self):
        executed("after")


def die(how: str) -> None:
    if how == "system_exit":
        sys.exit(3)
    if how == "keyboard_interrupt":
        raise KeyboardInterrupt()
    if how == "os_exit":
        os._exit(1)
    if how == "django_q_timeout":  # what django-q2's timeout raises in its worker (SIGALRM)
        from django_q.exceptions import TimeoutException

        raise TimeoutException("Task exceeded maximum timeout value (2 seconds)")
    if how == "sleep":  # outlive the task timeout
        time.sleep(30)
        return
    raise ValueError(f"unknown way to die: {how!r}")


class DyingTick(DurableWorkflow):
    """A durably_repeat whose tick takes its worker down for its first ``deaths`` executions;
    done after two good ticks."""

    retry_policy = THREE_ATTEMPTS

    def perform(self, *, on_error: str = "continue", deaths: int = 1000):
        self.deaths = deaths
        self.durably_repeat(
            self.tick,
            every=60,
            till=lambda context: context.get("ticks", 0) >= 2,
            on_error=on_error,
        )

    def tick(self):
        if executed("tick") <= self.deaths:
            sys.exit(3)
        self.context["ticks"] = self.context.get("ticks", 0) + 1


class DyingCondition(DurableWorkflow):
    """A wait_until or continue_if whose condition raises SystemExit."""

    def perform(self, *, kind: str):
        if kind == "wait_until":
            self.wait_until(self.ready, timeout=60, check_interval=5)
        else:
            self.continue_if(self.ready)

    def ready(self):
        executed("ready")
        sys.exit(3)


class ExitsInPerform(DurableWorkflow):
    """perform() itself (not a step) raises SystemExit while FLAGS["exit"] is set."""

    def perform(self):
        self.durably_execute(self.first)
        if FLAGS.get("exit"):
            sys.exit(3)
        self.durably_execute(self.second)

    def first(self):
        executed("first")

    def second(self):
        executed("second")


class AlwaysDeclined(DurableWorkflow):
    """One step that always fails, three attempts."""

    def perform(self):
        self.durably_execute(self.charge, retry_policy=THREE_ATTEMPTS)

    def charge(self):
        executed("charge")
        raise Declined("card declined")
