"""Workflow classes of the deadline tests (module level, so their dotted job_class imports).

``CALLS`` counts step bodies; ``FLAGS`` holds per-test switches (``FLAGS["in_first"]`` is called
inside ``Slow.first``: a test moves its clock there). Both are empty at the start of every test
(``tests.factories``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

CALLS = counter()
FLAGS: dict[str, Any] = per_test({})

HOUR = timedelta(hours=1)


called = CALLS.hit
calls = CALLS.of


class Parked(DurableWorkflow):
    """Parks on an event (continue_if), with an hour's deadline."""

    deadline = HOUR

    def perform(self) -> None:
        self.continue_if("open", name="gate")
        self.durably_execute(self.after)

    def open(self) -> bool:
        called("open")
        return bool(FLAGS.get("open"))

    def after(self):
        called("after")


class Receiver(DurableWorkflow):
    """Parks on a message (receive), with an hour's deadline."""

    deadline = HOUR

    def perform(self) -> Any:
        return self.receive("go")


class Slow(DurableWorkflow):
    """first, then second; ``FLAGS["in_first"]`` runs inside first (the clock moves there)."""

    deadline = HOUR

    def perform(self, *, wait: float = 0) -> None:
        self.durably_execute(self.first)
        if wait:
            self.wait(wait, "pause")
        self.durably_execute(self.second)

    def first(self):
        called("first")
        hook: Callable[[], None] | None = FLAGS.get("in_first")
        if hook is not None:
            hook()
        return 1

    def second(self):
        called("second")
        return 2


class Unbounded(DurableWorkflow):
    """No deadline of its own: a wait, then a step."""

    def perform(self, *, wait: float = 0) -> None:
        if wait:
            self.wait(wait, "pause")
        self.durably_execute(self.work)

    def work(self):
        called("work")


class Broken(DurableWorkflow):
    """Stalls on its first step, with an hour's deadline."""

    deadline = HOUR
    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self) -> None:
        self.durably_execute(self.boom)

    def boom(self):
        raise RuntimeError("broken")


class Child(DurableWorkflow):
    """A branch child parked on an event, without a deadline of its own."""

    def perform(self, *, n: int = 0) -> None:
        self.continue_if("open", name="gate")

    def open(self) -> bool:
        return bool(FLAGS.get("open"))


class ShortChild(Child):
    """A branch child with a deadline of its own (ten minutes from its first pass)."""

    deadline = timedelta(minutes=10)


class Parent(DurableWorkflow):
    """Spawns ``children`` Child rows and one ShortChild, then waits on the merge."""

    deadline = HOUR

    def perform(self, *, children: int = 2) -> None:
        self.branch("kids", self.spawn_kids)
        self.merge_branches("kids", min_interval=timedelta(seconds=5))
        self.durably_execute(self.after_merge)

    def spawn_kids(self):
        self.spawn_each(
            "child", range(self.workflow.kwargs.get("children", 2)), lambda i: (Child, {"n": i})
        )
        self.spawn("short", ShortChild)

    def after_merge(self):
        called("after_merge")


class UnboundedParent(Parent):
    """Parent without a deadline: its children have none but their own."""

    deadline = None


class LongBounded(Slow):
    """Slow with a deadline that crash recovery never reaches."""

    deadline = timedelta(days=30)


class WaitThenReturn(DurableWorkflow):
    """A wait, then perform() returns: after the wait no step body (no boundary) is left."""

    deadline = HOUR

    def perform(self, *, wait: float) -> str:
        called("perform")
        self.wait(wait, "pause")
        return "done"
