"""Workflow classes used by the operations tests (module level, so their job_class imports)."""

from __future__ import annotations

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

CALLS = counter()
called = CALLS.hit


class TransientError(Exception):
    pass


class OneStep(DurableWorkflow):
    """One step plus the completion marker: two execution logs."""

    def perform(self, *, value: int = 1):
        self.context["result"] = self.durably_execute(self.compute)

    def compute(self):
        called("OneStep.compute")
        return 42


class NeedsFix(DurableWorkflow):
    """Fails at workflow level (no retries) until an operator sets ``context["fixed"]``."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        called("NeedsFix.perform")
        if not self.context.get("fixed"):
            raise RuntimeError("not fixed yet: set context['fixed']")
        self.context["done"] = True


class StallsUntilFixed(DurableWorkflow):
    """A step that uses up its single attempt (-> stalled) until ``FIXED`` is set."""

    FIXED = False

    def perform(self):
        self.durably_execute(self.charge, retry_policy=RetryPolicy(max_attempts=1))

    def charge(self):
        called("StallsUntilFixed.charge")
        if not StallsUntilFixed.FIXED:
            raise TransientError("card declined")
        return "charged"


class RetriesOnce(DurableWorkflow):
    """The step fails once and schedules a retry 60 s later (a wait-like halt), then succeeds."""

    def perform(self):
        self.durably_execute(
            self.flaky, retry_policy=RetryPolicy(max_attempts=3, base=60, cap=60, jitter=False)
        )
        self.durably_execute(self.finish)

    def flaky(self):
        if called("RetriesOnce.flaky") == 1:
            raise TransientError("first call fails")
        return "ok"

    def finish(self):
        called("RetriesOnce.finish")


class Other(DurableWorkflow):
    """A second class, for keys that exist under several classes."""

    def perform(self):
        called("Other.perform")


# -- shapes for the static step listing (``graph``); never run ------------------------------------
class GraphLinear(DurableWorkflow):
    def perform(self, *, order_id=1):
        self.context["order"] = order_id  # not durable: ignored
        self.wait_until("payment_confirmed", timeout=3600)
        self.wait(60, "fraud_check_delay")
        self.durably_execute(self.charge)
        self.continue_if("shipped", name="carrier_webhook")
        self.durably_repeat("remind", every=60, till="delivered")
        self.branch("fulfil", self.dispatch_items)
        self.merge_branches("fulfil", "audit")

    def dispatch_items(self):
        pass


class GraphShapes(DurableWorkflow):
    def perform(self):
        self.prepare()
        if self.context.get("vip"):
            self.durably_execute("upgrade")
        for item in self.context.get("items", []):
            self.durably_execute(self.ship, name=f"ship_{item}")
        self.durably_execute("notify", name="notify")

    def prepare(self):
        self.durably_execute("validate")
        self.prepare_more()

    def prepare_more(self):
        self.durably_execute("reserve")


class GraphEmpty(DurableWorkflow):
    def perform(self):
        self.context["x"] = 1


TICKS: list = per_test([])  # scheduled times Ticker.tick received


class Ticker(DurableWorkflow):
    """A durably_repeat every second until ``limit`` ticks ran, for pruning a live workflow."""

    def perform(self, *, limit: int = 6):
        self.limit = limit
        self.durably_repeat(self.tick, every=1, till=self.enough)

    def tick(self, scheduled_time):
        TICKS.append(scheduled_time)
        self.context["runs"] = self.context.get("runs", 0) + 1

    def enough(self):
        return self.context.get("runs", 0) >= self.limit


class FailsOnceByFile(DurableWorkflow):
    """The step fails until ``marker`` exists (it creates it on the first failure), retrying after
    1 s: the failure/retry state survives across processes (the test and a real qcluster)."""

    def perform(self, *, marker: str):
        self.marker = marker
        self.durably_execute(
            self.step, retry_policy=RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)
        )

    def step(self):
        from pathlib import Path

        path = Path(self.marker)
        if not path.exists():
            path.write_text("failed once")
            raise TransientError("first attempt fails")
        return "ok"
