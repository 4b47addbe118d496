"""Test helpers for projects using chrono_forge.

    from chrono_forge.testing import workflow_env

    with workflow_env() as env:           # in-memory dispatcher, settable clock; restored on exit
        OrderWorkflow.perform_later("k", order_id=1)
        env.run_due()                     # run every continuation due now (until none is) -> count
        env.run_all()                     # run all, jumping the clock to each due time -> count
        env.advance(timedelta(hours=1))   # move the clock without running anything
        env.now, env.pending, env.drop_pending()  # or drop_pending(lambda run: run.is_merge_poll)

Also available as the pytest fixture ``chrono_forge_env`` (installed with the package).

    assert_crash_safe(OrderWorkflow, "k", order_id=1)   # a kill at every step boundary recovers

(:mod:`chrono_forge.crash_safety`; fixture form ``chrono_forge_crash_safe``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.module_loading import import_string

from . import clock, dispatch
from .conf import as_timedelta
from .dispatch.memory import InMemoryDispatcher, PendingRun

# Also assert_crash_safe, CrashTest, CrashReport and HardKill, loaded on first use (__getattr__).
__all__ = ["WorkflowEnv", "workflow_env", "PendingRun"]


class WorkflowEnv:
    """A fake clock plus an in-memory queue of continuations."""

    def __init__(self, start: datetime | None = None, max_runs: int = 10_000):
        self._now = start or timezone.now()
        self.dispatcher = InMemoryDispatcher()
        self.max_runs = max_runs

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        self._now += as_timedelta(delta)
        return self._now

    def travel_to(self, moment: datetime) -> datetime:
        self._now = moment
        return self._now

    @property
    def pending(self) -> list[PendingRun]:
        """Pending calls, soonest first: workflow passes unpack as ``(job_class, key, run_at)``;
        chrono_forge's own background tasks (merge pollers, bulk actions): ``job_class`` None."""
        return self.dispatcher.pending()

    def drop_pending(self, matching: Callable[[PendingRun], bool] | None = None) -> int:
        """Forget every pending call (or those ``matching(run)`` is true for: only the merge
        pollers, one workflow's passes, ...), as a broker that lost them would; -> how many."""
        return self.dispatcher.drop(matching)

    def _run(self, run: PendingRun) -> None:
        import_string(run.func)(*run.args, **run.kwargs)

    def run_due(self) -> int:
        """Run every continuation due at ``now`` (including ones they enqueue that are due).

        Returns how many ran."""
        count = 0
        while (run := self.dispatcher.pop_due(self._now)) is not None:
            count += 1
            self._guard(count)
            self._run(run)
        return count

    def run_all(self) -> int:
        """Run until nothing is pending, jumping the clock to each next due time; -> count."""
        count = 0
        while pending := self.dispatcher.pending():
            if pending[0].run_at > self._now:
                self._now = pending[0].run_at
            run = self.dispatcher.pop_due(self._now)
            assert run is not None  # the clock is at the head's due time
            count += 1
            self._guard(count)
            self._run(run)
        return count

    def _guard(self, count: int) -> None:
        if count > self.max_runs:
            raise RuntimeError(
                f"chrono_forge.testing: more than {self.max_runs} continuations ran; "
                "is a workflow rescheduling itself forever?"
            )


@contextmanager
def workflow_env(start: datetime | None = None, max_runs: int = 10_000) -> Iterator[WorkflowEnv]:
    env = WorkflowEnv(start=start, max_runs=max_runs)
    previous = dispatch.set_dispatcher(env.dispatcher)
    try:
        with clock.use(lambda: env.now):
            yield env
    finally:
        dispatch.set_dispatcher(previous)


def __getattr__(name: str):
    # Lazy: the crash-safety helper imports the executor (and the models) only when used.
    if name in ("assert_crash_safe", "CrashTest", "CrashReport", "HardKill"):
        from . import crash_safety

        return getattr(crash_safety, name)
    raise AttributeError(f"module 'chrono_forge.testing' has no attribute {name!r}")
