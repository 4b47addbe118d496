"""Workflow classes of the core-engine tests (module level, so their dotted job_class imports).

Counters and switches live in module-level dicts made with ``tests.factories``: they are empty
at the start of every test.
"""

from __future__ import annotations

from datetime import datetime

from chrono_forge import DurableWorkflow, RetryPolicy, clock
from chrono_forge.exceptions import ContextValidationError, ExecutionFailedError
from tests.factories import counter, per_test

CALLS = counter()
#: Per-test switches read by the workflows (e.g. "gate_open", "broken").
FLAGS: dict[str, object] = per_test({})

NO_WAIT = {"base": 0, "cap": 0, "jitter": False}


called = CALLS.hit
calls = CALLS.of


# -- errors ------------------------------------------------------------------------------------
class TransientError(Exception):
    pass


class NetworkError(Exception):
    pass


class SlowNetworkError(NetworkError):
    pass


class RateLimitError(Exception):
    pass


class DeclinedError(Exception):
    pass


class WorkflowLevelError(Exception):
    pass


# -- kitchen sink lite (no waits: the full KitchenSink belongs to the waits tests) ----------------
class LiteSink(DurableWorkflow):
    """process_order, optionally a permanent failure, then complete_order; timestamps in the
    context."""

    def perform(self, *, kwarg=None, fail_after_process=False):
        called("LiteSink.perform")
        self.context.set_once("order_id", f"order-{self.key}")
        self.durably_execute(self.process_order)
        if fail_after_process and not self.context.get("fixed"):
            raise RuntimeError("Permanent Failure")
        self.durably_execute("complete_order")

    def process_order(self):
        called("LiteSink.process_order")
        if FLAGS.pop("glitch_process_order", False):
            raise TransientError("injected before process_order")
        self.context["processed_at"] = clock.now().isoformat()

    def complete_order(self):
        called("LiteSink.complete_order")
        if FLAGS.pop("glitch_complete_order", False):
            raise TransientError("injected before complete_order")
        self.context["completed_at"] = clock.now().isoformat()


class StepRaisesExecutionFailed(DurableWorkflow):
    """A step method that itself raises ExecutionFailedError (until FLAGS["fixed"])."""

    def perform(self):
        self.context["before_step"] = "kept"
        self.durably_execute(self.explode)
        self.context["after_step"] = True

    def explode(self):
        called("StepRaisesExecutionFailed.explode")
        if not FLAGS.get("fixed"):
            raise ExecutionFailedError("the step gave up")
        return "fixed"


class ContextApi(DurableWorkflow):
    """Exercises the context API from inside perform."""

    def perform(self):
        ctx = self.context
        ctx["bracket"] = "via []"
        ctx.set("via_set", 1)
        FLAGS["first_set_once"] = ctx.set_once("once", "first")
        FLAGS["second_set_once"] = ctx.set_once("once", "second")
        FLAGS["has_once"] = "once" in ctx
        FLAGS["has_missing"] = "missing" in ctx
        FLAGS["get_default"] = ctx.get("missing", "fallback")
        ctx["a_list"] = [1, "two", {"three": 3}]
        ctx["a_dict"] = {"1": "str key", "nested": {"true": "str key"}}
        try:
            ctx["int_keys"] = {1: "JSON would turn the key into a string"}
        except ContextValidationError:
            FLAGS["int_key_refused"] = True
        try:
            ctx["missing"]
        except KeyError:
            FLAGS["missing_raises"] = True


class Counter(DurableWorkflow):
    """One step that counts how often its body ran (the concurrency and duplicate-delivery
    probe)."""

    def perform(self):
        called("Counter.perform")
        self.durably_execute(self.count)

    def count(self):
        called("Counter.count")
        return "counted"


# -- durably_execute and retries -------------------------------------------------------------------
class OneStep(DurableWorkflow):
    """A trivial top-level workflow: one step returning a small value, no context write."""

    def perform(self):
        self.durably_execute(self.work)

    def work(self):
        called("OneStep.work")
        return {"ok": True}


class NoSteps(DurableWorkflow):
    def perform(self):
        called("NoSteps.perform")


class AlwaysFails(DurableWorkflow):
    """The built-in step default (3 attempts)."""

    def perform(self):
        self.durably_execute(self.always_fails)

    def always_fails(self):
        called("always_fails")
        raise TransientError("nope")


class AlwaysFailsPerCall(DurableWorkflow):
    def perform(self):
        self.durably_execute(self.always_fails, retry_policy=RetryPolicy(max_attempts=2, **NO_WAIT))

    def always_fails(self):
        called("always_fails")
        raise TransientError("nope")


class AlwaysFailsClassPolicy(DurableWorkflow):
    retry_policy = RetryPolicy(max_attempts=2, **NO_WAIT)

    def perform(self):
        self.durably_execute(self.always_fails)

    def always_fails(self):
        called("always_fails")
        raise TransientError("nope")


class FlakyOnce(DurableWorkflow):
    """Fails on its first call, succeeds on the retry (1 s backoff, no jitter)."""

    def perform(self):
        self.durably_execute(
            self.flaky, retry_policy=RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)
        )

    def flaky(self):
        if called("FlakyOnce.flaky") == 1:
            raise TransientError("first call fails")
        return "ok"


class ReplayProbe(DurableWorkflow):
    """A completed step followed by a step that fails twice: the first must never re-run."""

    def perform(self):
        called("ReplayProbe.perform")
        first = self.durably_execute(self.first)
        second = self.durably_execute(
            self.second, retry_policy=RetryPolicy(max_attempts=5, base=10, jitter=False)
        )
        self.context["results"] = [first, second]

    def first(self):
        called("ReplayProbe.first")
        return {"n": 1, "when": clock.now().isoformat()}

    def second(self):
        if called("ReplayProbe.second") <= 2:
            raise TransientError("not yet")
        return [2]


class SideEffect(DurableWorkflow):
    """A step with an (idempotent) side effect, for the at-least-once crash test."""

    def perform(self):
        self.durably_execute(self.charge)

    def charge(self):
        called("SideEffect.charge")
        return "charged"


class Composite(DurableWorkflow):
    """Per-error budgets: NetworkError 2, RateLimitError 3 (errors scripted in FLAGS["errors"])."""

    def perform(self):
        self.durably_execute(
            self.call_api,
            retry_policy=[
                RetryPolicy(max_attempts=2, retry_on=[NetworkError], **NO_WAIT),
                RetryPolicy(max_attempts=3, retry_on=[RateLimitError], **NO_WAIT),
            ],
        )

    def call_api(self):
        called("Composite.call_api")
        errors = FLAGS.setdefault("errors", [])
        if errors:
            raise errors.pop(0)
        return "ok"


class CompositeSingle(DurableWorkflow):
    """A composite with one sub-policy [NetworkError max 2]."""

    def perform(self):
        self.durably_execute(
            self.call_api,
            retry_policy=[RetryPolicy(max_attempts=2, retry_on=[NetworkError], **NO_WAIT)],
        )

    def call_api(self):
        called("CompositeSingle.call_api")
        raise FLAGS["error"]


class PlainPolicyRetry(DurableWorkflow):
    """A single (non-composite) policy: fails once, succeeds after."""

    def perform(self):
        self.durably_execute(self.call_api, retry_policy=RetryPolicy(max_attempts=3, **NO_WAIT))

    def call_api(self):
        if called("PlainPolicyRetry.call_api") == 1:
            raise NetworkError("once")
        return "ok"


class WorkflowComposite(DurableWorkflow):
    retry_policy = [
        RetryPolicy(max_attempts=2, retry_on=[WorkflowLevelError], base=1, jitter=False),
        RetryPolicy(max_attempts=5, base=1, jitter=False),
    ]

    def perform(self):
        called("WorkflowComposite.perform")
        raise WorkflowLevelError("workflow-level")


class FailsOnce(DurableWorkflow):
    """Workflow-level error on the first pass only (max 1 attempt: fails immediately when FLAGS
    say)."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        called("FailsOnce.perform")
        raise RuntimeError("boom")


class FailsWithContext(DurableWorkflow):
    """Writes the context, then fails at workflow level with no retry."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self):
        self.context["written"] = True
        raise RuntimeError("boom")


class WokenFailure(DurableWorkflow):
    """Fails at workflow level (3 attempts, 60 s apart); every pass is raced by an external
    wake-up."""

    retry_policy = RetryPolicy(max_attempts=3, base=60, cap=60, jitter=False)

    def perform(self):
        from chrono_forge import tasks

        called("WokenFailure.perform")
        tasks.run_workflow(self.workflow.job_class, self.key)  # finds the lock held: flags the row
        raise RuntimeError("still broken")


class PermanentFailure(DurableWorkflow):
    def perform(self):
        called("PermanentFailure.perform")
        self.context["tried"] = calls("PermanentFailure.perform")
        raise RuntimeError("Permanent Failure")


class FixableFailure(DurableWorkflow):
    """Fails at workflow level until the operator sets context["fixed"]."""

    retry_policy = RetryPolicy(max_attempts=2, **NO_WAIT)

    def perform(self):
        called("FixableFailure.perform")
        if not self.context.get("fixed"):
            raise RuntimeError("not fixed yet")
        self.context["done"] = True


# -- steps, names and results ----------------------------------------------------------------------
class Steps(DurableWorkflow):
    """``n`` trivial steps, then (optionally) a gate step that fails, halting for a retry backoff,
    until FLAGS["gate_open"]."""

    def perform(self, *, n=1, gate=False, context_write=False):
        for index in range(n):
            self.durably_execute("noop", name=f"step_{index}")
        if context_write:
            self.context["written"] = True
        if gate:
            self.durably_execute(
                self.gate,
                retry_policy=RetryPolicy(max_attempts=None, base=60, cap=60, jitter=False),
            )

    def noop(self):
        return None

    def gate(self):
        called("Steps.gate")
        if not FLAGS.get("gate_open"):
            raise TransientError("gate closed")
        return "open"


class NamedStep(DurableWorkflow):
    def perform(self, *, name):
        self.durably_execute(self.work, name=name)

    def work(self):
        called("NamedStep.work")
        return "done"


class BadResult(DurableWorkflow):
    """A step whose return value cannot be stored (FLAGS["result"])."""

    def perform(self):
        self.durably_execute(self.produce)

    def produce(self):
        called("BadResult.produce")
        return FLAGS["result"]


class OversizedContext(DurableWorkflow):
    def perform(self, *, size):
        called("OversizedContext.perform")
        self.context["small"] = "kept"
        self.context["big"] = "x" * size


class EchoKwargs(DurableWorkflow):
    def perform(self, *, foo=None, n=None):
        FLAGS["received"] = {"foo": foo, "n": n}


class ContinueWithKwargs(DurableWorkflow):
    """Schedules a continuation carrying an arbitrary internal argument, then parks."""

    def perform(self):
        from chrono_forge.exceptions import HaltExecution

        called("ContinueWithKwargs.perform")
        FLAGS.setdefault("internal", []).append(dict(self._pass.delivery.internal))
        if not self._pass.delivery.internal.get("wait_condition"):
            self._pass.continue_after(5, wait_condition="my_cond")
            self.context["halted"] = True
            raise HaltExecution()


class ParkForever(DurableWorkflow):
    """Parks with nothing scheduled (the continue_if shape without the primitive)."""

    def perform(self):
        from chrono_forge.exceptions import HaltExecution

        called("ParkForever.perform")
        raise HaltExecution()


class ErrorContext(DurableWorkflow):
    """Writes FLAGS["context"] into the context, then fails in a step (1 attempt)."""

    def perform(self):
        self.context.merge(FLAGS["context"])
        self.durably_execute(self.fail, retry_policy=RetryPolicy(max_attempts=1))

    def fail(self):
        raise TransientError("with context")


class NotAWorkflow:
    def perform(self):  # pragma: no cover - must never run
        called("NotAWorkflow.perform")


def a_function():  # pragma: no cover - must never run
    called("a_function")


def iso(moment: datetime) -> str:
    return moment.isoformat()


class E2EFlaky(DurableWorkflow):
    """For a real qcluster (several worker processes, so no in-memory counters): the first attempt
    marks the context and fails; the retry, 1 s later, succeeds."""

    def perform(self):
        self.durably_execute(
            self.flaky, retry_policy=RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)
        )
        self.context["done"] = True

    def flaky(self):
        if not self.context.get("failed_once"):
            self.context["failed_once"] = True
            raise TransientError("the first attempt fails")
        return "ok"


class NulMessage(DurableWorkflow):
    """Raises an error whose message holds a NUL (PostgreSQL text cannot store it as is)."""

    def perform(self):
        raise TransientError("bad\x00byte")


class CheckpointProbe(DurableWorkflow):
    """Its second step records what the database held for the first one when its body started."""

    def perform(self):
        self.durably_execute(self.first)
        self.durably_execute(self.second)

    def first(self):
        return "first result"

    def second(self):
        from django.db import connection

        from chrono_forge.models import ExecutionLog

        first = ExecutionLog.objects.get(workflow=self.workflow, step_name="durably_execute$first")
        FLAGS["seen_before_second"] = (connection.in_atomic_block, first.state, first.result)


class FailsForeverUnbounded(DurableWorkflow):
    """A workflow-level error on every pass under an unbounded class policy with no backoff: only
    chrono_forge's guard on workflow-level attempts ends it."""

    retry_policy = RetryPolicy(max_attempts=None, base=0, cap=0, jitter=False)

    def perform(self):
        raise RuntimeError("perform() always fails")


class MissingStepMethod(DurableWorkflow):
    """A programming error: a step names a method the class does not have, so the pass stalls the
    workflow and raises InvalidStepArgument (django-q2 records a failed task)."""

    def perform(self):
        self.durably_execute("no_such_method")
