"""Workflow classes of the API-hardening tests: the enqueue contract, call-site programming errors
and error recording. Inputs come from ``FLAGS`` (empty at the start of every test)."""

from __future__ import annotations

from datetime import timedelta

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

FLAGS: dict[str, object] = per_test({})
CALLS = counter()
called = CALLS.hit


# -- the enqueue contract --------------------------------------------------------------------------
class TakesKey(DurableWorkflow):
    """A workflow whose own input is called ``key``."""

    def perform(self, *, key):
        self.context["customer"] = key


class Strict(DurableWorkflow):
    def perform(self, *, order_id, note=None):
        called("Strict.perform")
        self.context["order_id"] = order_id


class Loose(DurableWorkflow):
    def perform(self, **kwargs):
        called("Loose.perform")


class StoresResult(DurableWorkflow):
    """One step returning ``FLAGS["result"]``."""

    def perform(self):
        self.durably_execute(self.produce)

    def produce(self):
        called("StoresResult.produce")
        return FLAGS["result"]


class WritesContext(DurableWorkflow):
    """Writes ``FLAGS["context"]`` (a dict) into the context, key by key."""

    def perform(self):
        for key, value in FLAGS["context"].items():
            self.context[key] = value


class SpawnsChild(DurableWorkflow):
    """A branch spawning ``FLAGS["child"]`` (a class) with ``FLAGS["child_kwargs"]``."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        self.branch("kids", self.dispatch, automerge=True)

    def dispatch(self):
        self.spawn("one", FLAGS["child"], **FLAGS.get("child_kwargs", {}))


class SpawnsEach(DurableWorkflow):
    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        self.branch("kids", self.dispatch, automerge=True)

    def dispatch(self):
        self.spawn_each("each", [1, 2], lambda item: FLAGS["build"])


# -- call-site programming errors ------------------------------------------------------------------
class CallSite(DurableWorkflow):
    """Calls the primitive ``FLAGS["call"]`` (a function taking the workflow) once."""

    def perform(self):
        called("CallSite.perform")
        FLAGS["call"](self)

    def step(self):
        called("CallSite.step")
        return 1

    def other(self):
        called("CallSite.other")
        return 2

    def ready(self):
        return True

    def never(self):
        return False


# -- error recording -------------------------------------------------------------------------------
class Nasty(Exception):
    pass


class RaisesNasty(DurableWorkflow):
    """A step raising ``Nasty(FLAGS["message"])`` (no retries: 1 attempt)."""

    def perform(self):
        self.durably_execute(self.explode, retry_policy=RetryPolicy(max_attempts=2, base=0, cap=0))

    def explode(self):
        called("RaisesNasty.explode")
        raise Nasty(FLAGS["message"])


class RaisesNastyInPerform(DurableWorkflow):
    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        called("RaisesNastyInPerform.perform")
        raise Nasty(FLAGS["message"])


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken")


class RaisesUnprintable(DurableWorkflow):
    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        raise UnprintableError()


class ContinueIfRaises(DurableWorkflow):
    def perform(self):
        self.continue_if(self.gate)

    def gate(self):
        raise Nasty(FLAGS["message"])


HOUR = timedelta(hours=1)
