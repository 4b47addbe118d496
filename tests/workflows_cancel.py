"""Workflow classes of the cancellation tests (module level, so their dotted job_class imports).

``CALLS`` counts step bodies; ``FLAGS`` holds per-test switches. Both are empty at the start of
every test (``tests.factories``).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

CALLS = counter()
FLAGS: dict[str, object] = per_test({})
called = CALLS.hit
calls = CALLS.of


class TwoSteps(DurableWorkflow):
    """first, a wait, second: cancellable while scheduled between the two."""

    def perform(self, *, wait: float = 0) -> None:
        self.durably_execute(self.first)
        if wait:
            self.wait(wait, "pause")
        self.durably_execute(self.second)

    def first(self):
        called("first")
        cancel = FLAGS.get("cancel_in_first")
        if cancel:  # an operator cancels while this body runs
            type(self).cancel(self.key, reason=str(cancel))
        return 1

    def second(self):
        called("second")
        return 2


class ThreeSteps(DurableWorkflow):
    """first, second, third; ``FLAGS["cancel_after"]`` names the step after whose return
    ``perform()`` cancels the run: the cancel commits after that step finished and before the next
    step's attempt is written (which carries the cancellation check)."""

    def perform(self) -> None:
        for step in (self.first, self.second, self.third):
            self.durably_execute(step)
            if FLAGS.get("cancel_after") == step.__name__:
                type(self).cancel(self.key, reason=f"after {step.__name__}")

    def first(self):
        called("first")
        return 1

    def second(self):
        called("second")
        return 2

    def third(self):
        called("third")
        return 3


class StepThenReceive(DurableWorkflow):
    """A step, a cancel, then a receive of a message already waiting: the receive's attempt (the
    message consumed in the same transaction) carries the cancellation check."""

    def perform(self) -> None:
        self.durably_execute(self.first)
        type(self).cancel(self.key, reason="before the receive")
        self.context["got"] = self.receive("note")

    def first(self):
        called("first")
        return 1


class LastStepCancels(DurableWorkflow):
    """The cancel arrives in the last step's body: the run must not complete."""

    def perform(self) -> None:
        self.durably_execute(self.only)

    def only(self):
        called("only")
        type(self).cancel(self.key, reason="during the last step")
        return "done"


class FailsAfterCancel(DurableWorkflow):
    """The cancel arrives, then perform() raises: the run must not be recorded failed."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self) -> None:
        self.durably_execute(self.only)
        raise RuntimeError("boom after the step")

    def only(self):
        type(self).cancel(self.key, reason="then it raised")


class Gate(DurableWorkflow):
    """Parks on an event."""

    def perform(self) -> None:
        self.continue_if("open", name="gate")
        self.durably_execute(self.after)

    def open(self) -> bool:
        called("open")
        return bool(FLAGS.get("open"))

    def after(self):
        called("after")


class Broken(DurableWorkflow):
    """Stalls on its first step."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self) -> None:
        self.durably_execute(self.boom)
        self.durably_execute(self.after)

    def boom(self):
        called("boom")
        if not FLAGS.get("fixed"):
            raise RuntimeError("broken")

    def after(self):
        called("after")


class Leaf(DurableWorkflow):
    def perform(self, *, n: int = 0) -> None:
        self.durably_execute(self.work)

    def work(self):
        called("leaf")


class Middle(DurableWorkflow):
    """A child that has children of its own."""

    def perform(self, *, n: int = 0) -> None:
        self.branch("leaves", self.spawn_leaves, automerge=True)

    def spawn_leaves(self):
        for index in range(2):
            self.spawn(f"leaf{index}", Leaf, n=index)


class Parent(DurableWorkflow):
    """``children`` leaves and ``middles`` children with two leaves each, then a merge."""

    def perform(self, *, children: int = 3, middles: int = 0) -> None:
        self.branch("kids", self.spawn_kids)
        self.merge_branches("kids", min_interval=timedelta(seconds=1))
        self.durably_execute(self.after_merge)

    def spawn_kids(self):
        self.spawn_each(
            "leaf", range(self.workflow.kwargs.get("children", 3)), lambda i: (Leaf, {"n": i})
        )
        for index in range(self.workflow.kwargs.get("middles", 0)):
            self.spawn(f"middle{index}", Middle, n=index)

    def after_merge(self):
        called("after_merge")


# -- end to end (a real qcluster): files instead of in-process counters ----------------------------
class SlowThenSecond(DurableWorkflow):
    """``first`` notes that it started (the file ``started``) and, when ``release`` names a file,
    runs until that file exists; an optional durable ``wait``; ``second`` appends a line to
    ``counter``. A cancel that lands while ``first`` runs, or during the wait, must keep ``second``
    from ever running."""

    def perform(self, *, started: str, counter: str, release: str = "", wait: float = 0) -> None:
        self.started, self.counter, self.release = started, counter, release
        self.durably_execute(self.first)
        if wait:
            self.wait(wait, "pause")
        self.durably_execute(self.second)

    def first(self):
        Path(self.started).touch()
        deadline = time.monotonic() + 60
        while self.release and not Path(self.release).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.release} never appeared")
            time.sleep(0.05)
        return 1

    def second(self):
        with open(self.counter, "a") as handle:
            handle.write("second\n")
        return 2
