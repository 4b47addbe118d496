"""Workflow classes of the results tests: ``perform()``'s return value, ``branch_results``.

Module-level state (``READS``, ``PROBE``, ``FLAGS``, ``PASSES``) is empty at the start of every
test (``tests.factories``).
"""

from __future__ import annotations

from typing import Any

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import per_test

#: Every sequence a pass of a branch_results reader saw, by workflow key (replays append again).
READS: dict[str, list[list]] = per_test({})
#: ``PROBE["consume"](iterator)``: how StreamResults consumes branch_results (the memory test).
PROBE: dict[str, Any] = per_test({})
#: Per-test switches: ``FLAGS["bad"]`` is what BadResult returns.
FLAGS: dict[str, Any] = per_test({})


class Totals(DurableWorkflow):
    """Returns a dict built from a step's result."""

    def perform(self, *, order_id):
        charge = self.durably_execute(self.charge)
        self.durably_execute(self.ship)
        return {"order_id": order_id, "total": charge["amount"]}

    def charge(self):
        return {"amount": 42}

    def ship(self):
        return "shipped"


class ReturnsNothing(DurableWorkflow):
    def perform(self):
        self.durably_execute(self.step)

    def step(self):
        return 1


class Double(DurableWorkflow):
    """A branch child: returns twice its value."""

    def perform(self, *, value):
        return value * 2


class SumChildren(DurableWorkflow):
    """Spawns ``n`` Double children, merges, and returns the sum of their results; every pass
    that reads the results records the sequence it saw in READS."""

    def perform(self, *, n=3, of=1000):
        self.branch("items", self.dispatch, automerge=True)
        seen = [list(pair) for pair in self.branch_results("items", of=of)]
        READS.setdefault(self.key, []).append(seen)
        # one more step, failing once when FLAGS["fail_after_once"]: its retry replays the read
        self.durably_execute(
            self.after, retry_policy=RetryPolicy(max_attempts=2, base=0, cap=0, jitter=False)
        )
        return {"total": sum(result for _key, result in seen), "count": len(seen)}

    def dispatch(self):
        n = self.workflow.kwargs.get("n", 3)
        self.spawn_each("c", range(n), lambda i: (Double, {"value": i}))

    def after(self):
        if FLAGS.pop("fail_after_once", False):
            raise RuntimeError("after fails once")
        return True


class StreamResults(DurableWorkflow):
    """Opens a branch of ``n`` children (the test completes them in bulk), merges it, then hands
    the branch_results iterator to ``PROBE["consume"]``."""

    def perform(self, *, n, of=500):
        self.branch("items", self.dispatch, automerge=True)
        PROBE["consume"](self.branch_results("items", of=of))

    def dispatch(self):
        n = self.workflow.kwargs["n"]
        self.spawn_each("c", range(n), lambda i: (Double, {"value": i}), of=1000)


#: One entry per pass of CountsPasses (the crash-safety check must see its result change).
PASSES: list[int] = per_test([])


class CountsPasses(DurableWorkflow):
    """Not crash safe on purpose: returns how many passes ran, which a kill changes."""

    def perform(self):
        PASSES.append(1)
        self.durably_execute(self.step)
        return len(PASSES)

    def step(self):
        return 1


class BadResult(DurableWorkflow):
    """Returns ``FLAGS["bad"]`` after a step."""

    def perform(self):
        self.durably_execute(self.step)
        return FLAGS["bad"]

    def step(self):
        return "ran"


class ReadsUnmerged(DurableWorkflow):
    """Reads a branch's results before merging it."""

    def perform(self):
        self.branch("items", self.dispatch)
        list(self.branch_results("items"))
        self.merge_branches("items")

    def dispatch(self):
        self.spawn("a", Double, value=1)


class ReadsUnknown(DurableWorkflow):
    def perform(self):
        self.branch_results("never_opened")


class ReadsBadName(DurableWorkflow):
    def perform(self):
        self.branch_results("a$b")


class WaitsInPerform(DurableWorkflow):
    """Calls wait_for_result inside perform()."""

    def perform(self):
        Totals.wait_for_result("other", timeout=1)


class WaitsInStep(DurableWorkflow):
    """Calls wait_for_result inside a step body (one attempt by its policy, then it stalls)."""

    def perform(self):
        self.durably_execute(self.step, retry_policy=RetryPolicy(max_attempts=1))

    def step(self):
        return Totals.wait_for_result("other", timeout=1)
