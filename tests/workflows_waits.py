"""Workflow classes for the wait / wait_until / continue_if / durably_repeat tests.

Module level so their job_class imports. Calls are counted in ``CALLS`` and switches live in
``FLAGS``; both are empty at the start of every test (``tests.factories``).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

from chrono_forge import DurableWorkflow, RetryPolicy, clock
from chrono_forge.exceptions import ExecutionFailedError, WaitConditionNotMet
from tests.factories import counter, per_test

CALLS = counter()
FLAGS: dict[str, object] = per_test({})
TICKS: list[datetime | None] = per_test(
    []
)  # scheduled times the repeat methods received, in call order


called = CALLS.hit


class TransientError(Exception):
    pass


class InjectedError(Exception):
    """What the fault-injection monkeypatch raises."""


# -- KitchenSink -----------------------------------------------------------------------------------


class KitchenSink(DurableWorkflow):
    def perform(self, *, kwarg=None, permanent_failure=False):
        self.context.set_once("order_id", uuid.uuid4().hex)
        self.wait_until("payment_confirmed", timeout=1, check_interval=0.1)
        self.wait(1, "fraud_check_delay")
        self.fault("before_process_order")
        self.durably_execute("process_order")
        self.fault("before_complete_order")
        if permanent_failure:
            raise RuntimeError("Permanent Failure")
        self.durably_execute("complete_order")

    def fault(self, point: str) -> None:
        """A fault-injection point: tests monkeypatch it to raise once."""

    def payment_confirmed(self):
        return called("KitchenSink.payment_confirmed") >= 3  # false, false, true

    def process_order(self):
        called("KitchenSink.process_order")
        self.context["processed_at"] = clock.now().isoformat()

    def complete_order(self):
        called("KitchenSink.complete_order")
        self.context["completed_at"] = clock.now().isoformat()


# -- wait ------------------------------------------------------------------------------------------


class WaitThenStep(DurableWorkflow):
    def perform(self, *, seconds=3600, name="cool_down"):
        called("WaitThenStep.perform")
        self.wait(seconds, name)
        self.durably_execute("after")

    def after(self):
        called("WaitThenStep.after")


class TwoWaits(DurableWorkflow):
    def perform(self):
        self.wait(timedelta(minutes=10), "first")
        self.wait(timedelta(minutes=5), "second")


class BadWait(DurableWorkflow):
    """Arguments come from ``FLAGS["args"]``, so tests can pass non-JSON values (NaN, ...)."""

    def perform(self):
        args = {"duration": 1, "name": "ok", **FLAGS.get("args", {})}
        self.wait(args["duration"], args["name"])


# -- wait_until ------------------------------------------------------------------------------------


class WaitUntil(DurableWorkflow):
    """``cond`` names a condition below; ``policy``: max_attempts, retrying TransientError only."""

    def perform(self, *, cond="ready", timeout=60, interval=10, policy=None, name=None, then=True):
        retry = None
        if policy is not None:
            retry = RetryPolicy(
                max_attempts=policy, base=0, cap=0, jitter=False, retry_on=[TransientError]
            )
        result = self.wait_until(
            cond, timeout=timeout, check_interval=interval, retry_policy=retry, name=name
        )
        self.context["result"] = result
        if then:
            self.durably_execute("after")

    def after(self):
        called("WaitUntil.after")

    def ready(self):
        called("ready")
        return bool(FLAGS.get("ready"))

    def ready_third_time(self):
        return called("ready_third_time") >= 3

    def never(self):
        called("never")
        return False

    def explodes(self):
        called("explodes")
        raise ValueError("condition exploded")

    def transient_once(self):
        if called("transient_once") == 1:
            raise TransientError("flaky condition")
        return True


class WaitUntilClassPolicy(DurableWorkflow):
    """A generous class default that wait_until must NOT inherit."""

    retry_policy = RetryPolicy(max_attempts=5, base=0, cap=0, jitter=False)

    def perform(self):
        self.wait_until("explodes", timeout=60, check_interval=10)

    def explodes(self):
        called("explodes")
        raise TransientError("condition exploded")


class WaitUntilCatches(DurableWorkflow):
    """Handles the failure itself: the workflow goes on, and replays take the same branch."""

    def perform(self, *, cond="never"):
        try:
            self.wait_until(cond, timeout=0, check_interval=1)
            self.context["branch"] = "met"
        except WaitConditionNotMet:
            self.context["branch"] = "timed out"
        except ExecutionFailedError:
            self.context["branch"] = "failed"
        self.context["passes"] = self.context.get("passes", 0) + 1
        self.wait(5, "after_timeout")
        self.durably_execute("done")

    def never(self):
        called("never")
        return False

    def explodes(self):
        called("explodes")
        raise ValueError("condition exploded")

    def done(self):
        called("done")


# -- continue_if -----------------------------------------------------------------------------------


class Gate(DurableWorkflow):
    def perform(self):
        self.durably_execute("step1")
        self.continue_if("condition_met")
        self.durably_execute("step3")

    def step1(self):
        called("step1")

    def step3(self):
        called("step3")

    def condition_met(self):
        called("condition_met")
        return bool(FLAGS.get("open"))


class SimpleGate(DurableWorkflow):
    def perform(self):
        self.continue_if("condition_met")
        called("after_gate")

    def condition_met(self):
        called("condition_met")
        return bool(FLAGS.get("open"))


class TwoGates(DurableWorkflow):
    def perform(self):
        self.durably_execute("step1")
        self.continue_if("first_open", name="first_gate")
        self.durably_execute("step2")
        self.continue_if(self.second_open, name="second_gate")
        self.durably_execute("step3")

    def step1(self):
        called("step1")

    def step2(self):
        called("step2")

    def step3(self):
        called("step3")

    def first_open(self):
        return bool(FLAGS.get("first"))

    def second_open(self):
        return bool(FLAGS.get("second"))


class NamedGate(DurableWorkflow):
    def perform(self):
        self.continue_if("condition_met", name="custom_step_name")

    def condition_met(self):
        return bool(FLAGS.get("open", True))


class RaisingGate(DurableWorkflow):
    def perform(self):
        self.continue_if("condition_met")

    def condition_met(self):
        called("condition_met")
        raise RuntimeError("gate condition broke")


class CaughtGateFailure(DurableWorkflow):
    """Catches the raising gate's failure and goes on; replays raise it again without evaluating."""

    def perform(self):
        try:
            self.continue_if("condition_met")
        except ExecutionFailedError:
            self.context["caught"] = self.context.get("caught", 0) + 1
        self.wait(5, "later")

    def condition_met(self):
        called("condition_met")
        raise RuntimeError("gate condition broke")


class ManyStepsGate(DurableWorkflow):
    """N completed steps, a finished durably_repeat, then a closed gate: what the completed-step
    preload reads."""

    def perform(self, *, n=3):
        for index in range(n):
            self.durably_execute("step", name=f"step_{index}")
        self.durably_repeat("poll", every=1, till=lambda ctx: ctx.get("polls", 0) >= 2)
        self.continue_if("gate_open")

    def step(self):
        called("step")

    def poll(self):
        self.context["polls"] = self.context.get("polls", 0) + 1

    def gate_open(self):
        return bool(FLAGS.get("open"))


# -- durably_repeat --------------------------------------------------------------------------------


class Repeater(DurableWorkflow):
    """One configurable durably_repeat, then a step; ``context["runs"]`` counts executions."""

    def perform(
        self,
        *,
        method="tick",
        every=2,
        limit=3,
        timeout=3600,
        start_offset=None,
        on_error="continue",
        name=None,
        policy=None,
        till="enough",
    ):
        start_at = (
            clock.now() + timedelta(seconds=start_offset) if start_offset is not None else None
        )
        retry = RetryPolicy(max_attempts=policy, base=0, cap=0, jitter=False) if policy else None
        if till == "callable":
            till = lambda context: context.get("runs", 0) >= limit  # noqa: E731
        elif till == "bound":
            till = self.enough
        elif till == "clock":  # for schedules whose method never runs (every tick missed)
            end = FLAGS["end"]
            till = lambda context: clock.now() >= end  # noqa: E731
        self.limit = limit
        self.durably_repeat(
            method,
            every=every,
            till=till,
            start_at=start_at,
            retry_policy=retry,
            timeout=timeout,
            on_error=on_error,
            name=name,
        )
        self.durably_execute("after")

    def enough(self):
        return self.context.get("runs", 0) >= self.limit

    def count(self):
        self.context["runs"] = self.context.get("runs", 0) + 1

    def after(self):
        called("after")

    # the repeated methods
    def tick(self, scheduled_time=None):
        TICKS.append(scheduled_time)
        self.count()

    def tick_bare(self):
        TICKS.append(None)
        self.count()

    def tick_extra(self, scheduled_time=None, extra="default_value"):
        TICKS.append(scheduled_time)
        FLAGS["extra"] = extra
        self.count()

    def flaky(self, scheduled_time):
        attempt = called("flaky")
        if attempt <= FLAGS.get("failures", 2):
            raise TransientError("Simulated failure")
        TICKS.append(scheduled_time)
        self.count()

    def always_fails(self):
        called("always_fails")
        raise TransientError("Simulated failure")

    def needs_two(self, a, b):  # pragma: no cover - rejected before it is called
        pass


class BadRepeat(DurableWorkflow):
    def perform(self):
        args = {"method": "tick", "every": 1, "till": "done", **FLAGS.get("args", {})}
        self.durably_repeat(args.pop("method"), **args)

    def tick(self):
        pass

    def done(self):
        return False

    def needs_two(self, a, b):  # pragma: no cover - rejected before it is called
        pass

    def keyword_only(self, *, required):  # pragma: no cover - rejected before it is called
        pass


class BadCondition(DurableWorkflow):
    def perform(self):
        args = {"kind": "wait_until", "condition": "ready", **FLAGS.get("args", {})}
        primitive = getattr(self, args.pop("kind"))
        primitive(args.pop("condition"), **args)

    def ready(self):
        return True


class CaughtRepeatFailure(DurableWorkflow):
    """A fail_workflow repeat whose failure the workflow catches: replays raise it again."""

    def perform(self):
        try:
            self.durably_repeat(
                "always_fails",
                every=1,
                till=lambda ctx: False,
                on_error="fail_workflow",
                retry_policy=RetryPolicy(max_attempts=1),
            )
        except ExecutionFailedError:
            self.context["caught"] = self.context.get("caught", 0) + 1
        self.wait(5, "later")

    def always_fails(self):
        called("always_fails")
        raise TransientError("Simulated failure")


# --- end to end (a real qcluster) ----------------------------------------------------------------


class E2EWaits(DurableWorkflow):
    """Waits 2 s, polls a condition that is true on its third check (two 1 s poll intervals), then
    parks on a gate that another process opens (a file) and wakes (resume / perform_later)."""

    def perform(self, *, flag_path):
        self.flag_path = flag_path
        self.wait(2, "pause")
        self.wait_until("third_poll", timeout=30, check_interval=1)
        self.continue_if("flag_raised")
        self.durably_execute("finish")

    def third_poll(self):
        polls = self.context.get("polls", []) + [clock.now().isoformat()]
        self.context["polls"] = polls
        return len(polls) >= 3

    def flag_raised(self):
        return os.path.exists(self.flag_path)

    def finish(self):
        return "done"
