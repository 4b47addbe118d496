"""Workflow classes of the signal and tracing tests (module level, so workers can import them)."""

from __future__ import annotations

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import per_test

NO_WAIT = {"base": 0, "cap": 0, "jitter": False}
FLAKY: dict[str, int] = per_test({})


class Fails(Exception):
    pass


class TwoSteps(DurableWorkflow):
    """Two steps with a durable wait between them: at least two passes."""

    def perform(self, *, wait: float = 0):
        self.durably_execute(self.first)
        if wait:
            self.wait(wait, "pause")
        self.durably_execute(self.second)

    def first(self):
        return 1

    def second(self):
        return 2


class FailingStep(DurableWorkflow):
    """A step that fails twice (retried once, then failed for good): the run stalls."""

    retry_policy = RetryPolicy(max_attempts=2, **NO_WAIT)

    def perform(self):
        self.durably_execute(self.boom)

    def boom(self):
        raise Fails("the step failed")


class FlakyStep(DurableWorkflow):
    """A step that fails on its first attempt, then succeeds."""

    retry_policy = RetryPolicy(max_attempts=3, **NO_WAIT)

    def perform(self):
        self.durably_execute(self.flaky)

    def flaky(self):
        FLAKY[self.key] = FLAKY.get(self.key, 0) + 1
        if FLAKY[self.key] == 1:
            raise Fails("first attempt")
        return "ok"


class FailingWorkflow(DurableWorkflow):
    """perform() raises with no workflow-level retries: the run fails."""

    retry_policy = RetryPolicy(max_attempts=1, **NO_WAIT)

    def perform(self):
        raise Fails("the workflow failed")
