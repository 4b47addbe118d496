"""Workflow classes of the ``on_cancel`` hook tests (module level, so their job_class imports).

``CALLS`` counts step and hook bodies, ``REASONS`` records the reasons the hooks got, ``FLAGS``
holds per-test switches; all three are empty at the start of every test (``tests.factories``).
``Gated`` writes an auth ``Group`` row from its hook, which a test can see from another process
(the e2e test under a real qcluster).
"""

from __future__ import annotations

from datetime import timedelta

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

CALLS = counter()
FLAGS: dict[str, object] = per_test({})
REASONS: list[tuple[str, str]] = per_test([])
called = CALLS.hit
calls = CALLS.of


class Reserve(DurableWorkflow):
    """Reserves, waits, ships; its hook releases the reservation and returns what it did."""

    def perform(self, *, wait: float = 60) -> None:
        self.durably_execute(self.reserve)
        self.wait(wait, "hold")
        self.durably_execute(self.ship)

    def reserve(self):
        called("reserve")
        if FLAGS.get("cancel_in_reserve"):  # an operator cancels while this body runs
            type(self).cancel(self.key, reason="stop while reserving")
        return "reserved"

    def ship(self):
        called("ship")

    def on_cancel(self, reason):
        called("hook")
        REASONS.append((self.key, reason))
        return {"released": self.key}


class FlakyHook(DurableWorkflow):
    """Its hook fails until ``FLAGS["hook_fixed"]``; three attempts, 1 s apart."""

    on_cancel_retry_policy = RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)

    def perform(self) -> None:
        self.wait(60, "hold")

    def on_cancel(self, reason):
        attempt = called("flaky_hook")
        if not FLAGS.get("hook_fixed"):
            raise ConnectionError(f"notification service down (attempt {attempt})")
        return attempt


class DefaultPolicyHook(DurableWorkflow):
    """No ``on_cancel_retry_policy``: the hook takes the class's ``retry_policy``."""

    retry_policy = RetryPolicy(max_attempts=2, base=1, cap=1, jitter=False)

    def perform(self) -> None:
        self.wait(60, "hold")

    def on_cancel(self, reason):
        called("default_policy_hook")
        raise RuntimeError("always")


class Plain(DurableWorkflow):
    """No hook at all."""

    def perform(self) -> None:
        self.wait(60, "hold")


class CancelsItself(DurableWorkflow):
    """One step that cancels its own run: the hook runs once, after the pass released."""

    def perform(self) -> None:
        self.durably_execute(self.only)
        self.durably_execute(self.never)

    def only(self):
        called("only")
        type(self).cancel(self.key, reason="changed my mind")
        return "done"

    def never(self):
        called("never")

    def on_cancel(self, reason):
        called("self_hook")
        REASONS.append((self.key, reason))
        return reason


class HookLeaf(DurableWorkflow):
    def perform(self, *, n: int = 0) -> None:
        self.wait(60, "hold")

    def on_cancel(self, reason):
        called("leaf_hook")
        REASONS.append((self.key, reason))


class PlainLeaf(DurableWorkflow):
    def perform(self, *, n: int = 0) -> None:
        self.wait(60, "hold")


class Tree(DurableWorkflow):
    """``hooked`` children with a hook and ``plain`` children without, then a merge."""

    def perform(self, *, hooked: int = 3, plain: int = 2) -> None:
        self.branch("kids", self.spawn_kids)
        self.merge_branches("kids", min_interval=timedelta(seconds=1))

    def spawn_kids(self):
        kwargs = self.workflow.kwargs
        self.spawn_each("h", range(kwargs.get("hooked", 3)), lambda i: (HookLeaf, {"n": i}))
        self.spawn_each("p", range(kwargs.get("plain", 2)), lambda i: (PlainLeaf, {"n": i}))


class Gated(DurableWorkflow):
    """Parks on an event; its hook writes a Group row named after the run and the reason."""

    def perform(self) -> None:
        self.continue_if("open", name="gate")

    def open(self) -> bool:
        return False

    def on_cancel(self, reason):
        from django.contrib.auth.models import Group

        Group.objects.get_or_create(name=f"on_cancel:{self.key}:{reason}"[:150])
        return "released"


class CancelsInPerform(DurableWorkflow):
    """Cancels its own run on its first pass, outside any step, so every step boundary of the
    run (for the crash test) is one of the hook's or the cancelled pass's release."""

    def perform(self) -> None:
        type(self).cancel(self.key, reason="cancelled from perform")

    def on_cancel(self, reason):
        called("crash_hook")
        return reason


class SlowStep(DurableWorkflow):
    """A step that signals it started (a file) and runs until a "go" file appears, then a second
    step; its hook writes a Group row. For the e2e test cancelling a pass mid-step."""

    def perform(self, *, started: str, go: str) -> None:
        self.durably_execute(self.work)
        self.durably_execute(self.after)

    def work(self):
        import time
        from pathlib import Path

        kwargs = self.workflow.kwargs
        Path(kwargs["started"]).write_text("started")
        deadline = time.monotonic() + 60
        while not Path(kwargs["go"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "worked"

    def after(self):
        from django.contrib.auth.models import Group

        Group.objects.get_or_create(name=f"after:{self.key}")

    def on_cancel(self, reason):
        from django.contrib.auth.models import Group

        Group.objects.get_or_create(name=f"on_cancel:{self.key}:{reason}"[:150])
        return "released"


class ExitingHook(DurableWorkflow):
    """Its hook calls ``sys.exit()`` on its first attempt (the worker going down)."""

    on_cancel_retry_policy = RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)

    def perform(self) -> None:
        self.wait(60, "hold")

    def on_cancel(self, reason):
        import sys

        if called("exiting_hook") == 1:
            sys.exit(3)
        return "second time"


class BoundedReserve(Reserve):
    """Reserve with an hour's deadline: a cancel by the deadline runs the hook too."""

    deadline = timedelta(hours=1)


class UnstorableHook(DurableWorkflow):
    """Its hook returns a value JSON cannot hold (a programming error: never retried)."""

    on_cancel_retry_policy = RetryPolicy(max_attempts=3, base=1, cap=1, jitter=False)

    def perform(self) -> None:
        self.wait(60, "hold")

    def on_cancel(self, reason):
        called("unstorable_hook")
        return {"not json"}


class OneShotHook(DurableWorkflow):
    """One attempt only: an attempt its worker never finished uses up the budget."""

    on_cancel_retry_policy = RetryPolicy(max_attempts=1)

    def perform(self) -> None:
        self.wait(60, "hold")

    def on_cancel(self, reason):
        called("one_shot_hook")
        return "ran"
