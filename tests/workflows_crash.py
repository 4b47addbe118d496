"""Workflows for the crash-safety helper's own tests (module level, so their job_class imports)."""

from __future__ import annotations

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import per_test

#: An external system without idempotency: every charge is a new entry.
LEDGER: list[str] = per_test([])


class DoubleCharge(DurableWorkflow):
    """Not crash safe: ``charge`` appends to an external ledger without an idempotency key, and a
    later step records what the ledger holds, so a kill that re-runs ``charge`` changes the end."""

    def perform(self):
        self.durably_execute(self.charge)
        self.durably_execute(self.receipt)

    def charge(self):
        LEDGER.append(self.key)

    def receipt(self):
        self.context["charges"] = LEDGER.count(self.key)


class IdempotentCharge(DoubleCharge):
    """The fix: the charge is keyed, so running it twice charges once."""

    def charge(self):
        if self.key not in LEDGER:
            LEDGER.append(self.key)


#: A fake notification service: scheduled tick times it was told about (idempotent by tick).
NOTIFIED: set[str] = per_test(set())


class Ticker(DurableWorkflow):
    """A durably_repeat done the crash-safe way: each tick is keyed by its scheduled time, and
    ``till`` asks the service, not the context the tick's pass had not saved yet."""

    def perform(self):
        self.durably_repeat(self.tick, every=60, till=self.done)
        self.durably_execute(self.summary)

    def tick(self, scheduled_time):
        NOTIFIED.add(scheduled_time.isoformat())

    def done(self):
        return len(NOTIFIED) >= 3

    def summary(self):
        return {"ticks": len(NOTIFIED)}


# -- a first pass writes its lock with its first write ---------------------------------------------
class ThreeWrites(DurableWorkflow):
    """Three steps, each a keyed (idempotent) external write: the throughput bench's shape."""

    def perform(self):
        for index in range(3):
            self.index = index
            self.durably_execute(self.write, name=f"write_{index}")

    def write(self):
        entry = f"{self.key}:{self.index}"
        if entry not in LEDGER:
            LEDGER.append(entry)
        return entry


class NoStepsAtAll(DurableWorkflow):
    """No step: the pass's first write is its completion (lock, marker and state in one commit)."""

    def perform(self):
        return {"done": True}


class RaisesBeforeAnyStep(DurableWorkflow):
    """perform() raises before any step: the pass's first write is the error (then, once the
    workflow-level retries are used up, the failure marker)."""

    retry_policy = RetryPolicy(max_attempts=2, base=1, cap=1, jitter=False)

    def perform(self):
        raise RuntimeError("broken before any step")
