"""Workflow classes of the step-timeout tests (module level, so their dotted job_class imports in
a qcluster worker too).

In-process counters are tests.workflows_poison's ``EXECUTIONS`` (empty at the start of every
test); a body run by a qcluster worker appends a line to the file named by ``counter``.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.workflows_poison import count_in, executed

#: Timeouts a workflow kwarg (JSON) cannot carry, by name: ``timeout="name"`` picks one.
TIMEOUTS: dict[str, object] = {
    "30 s as a timedelta": timedelta(seconds=30),
    "zero timedelta": timedelta(0),
    "nan": math.nan,
    "inf": math.inf,
    "a string": "30",
    "a list": [1],
}


class SlowStep(DurableWorkflow):
    """One step with a ``timeout`` whose first ``slow_attempts`` attempts sleep ``sleep`` seconds
    (later ones return at once), then a second step. ``attempts``: the step's ``max_attempts``
    (retries 1 s apart); ``retry_on``: ``"timeout"`` (TimeoutError only) or ``"key"`` (KeyError
    only), default every error. ``timeout``: seconds, or a name in ``TIMEOUTS``."""

    def perform(
        self,
        *,
        timeout: float | str = 0.2,
        sleep: float = 30.0,
        slow_attempts: int = 1000,
        attempts: int = 1,
        retry_on: str = "",
        counter: str = "",
    ):
        self.sleep, self.slow_attempts, self.counter = sleep, slow_attempts, counter
        errors = {"timeout": [TimeoutError], "key": [KeyError]}.get(retry_on)
        policy = RetryPolicy(max_attempts=attempts, base=1, cap=1, jitter=False, retry_on=errors)
        self.context["result"] = self.durably_execute(
            self.slow,
            timeout=TIMEOUTS[timeout] if isinstance(timeout, str) else timeout,
            retry_policy=policy,
        )
        self.durably_execute(self.after)

    def slow(self):
        n = count_in(self.counter) if self.counter else executed("slow")
        if n <= self.slow_attempts:
            time.sleep(self.sleep)
            executed("slow_finished")  # only reached when nothing interrupted the sleep
        return n

    def after(self):
        executed("after")


class QuickStep(DurableWorkflow):
    """One trivial step, with or without a timeout (the statement count must not differ)."""

    def perform(self, *, timeout: float | None = None):
        self.durably_execute(self.quick, timeout=timeout)

    def quick(self):
        return "done"
