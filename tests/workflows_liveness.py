"""Workflow classes of the liveness tests: every fault ends completed after the sweeps."""

from __future__ import annotations

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

CALLS = counter()
FLAGS: dict[str, bool] = per_test({})
called = CALLS.hit


class Quick(DurableWorkflow):
    def perform(self):
        self.durably_execute(self.work)

    def work(self):
        called(f"Quick.work:{self.key}")
        return "done"


class Gated(DurableWorkflow):
    """Parks on an event gate until ``FLAGS["open"]``, then runs one step."""

    def perform(self):
        self.continue_if(self.is_open, name="approved")
        self.durably_execute(self.ship)

    def is_open(self):
        called("Gated.is_open")
        return FLAGS.get("open", False)

    def ship(self):
        called("Gated.ship")
        return "shipped"


class Stalls(DurableWorkflow):
    """Stalls (one attempt) until ``FLAGS["fixed"]``."""

    def perform(self):
        self.durably_execute(self.charge, retry_policy=RetryPolicy(max_attempts=1))

    def charge(self):
        called("Stalls.charge")
        if not FLAGS.get("fixed"):
            raise RuntimeError("card declined")
        return "charged"


class Napper(DurableWorkflow):
    """A child that sleeps 60 s before its step: its parent's merge has to poll."""

    def perform(self):
        self.wait(60, "nap")
        self.durably_execute(self.work)

    def work(self):
        called("Napper.work")
        return self.key


class Fan(DurableWorkflow):
    """Spawns three nappers, merges them, then one step."""

    def perform(self):
        self.branch("kids", self.dispatch, automerge=True)
        self.durably_execute(self.after)

    def dispatch(self):
        self.spawn_each("n", range(3), lambda item: Napper)

    def after(self):
        called("Fan.after")
        return "merged"
