"""``assert_crash_safe``: kill a workflow at every step boundary and check it recovers.

    from chrono_forge.testing import assert_crash_safe

    def test_orders_survive_crashes(db):
        assert_crash_safe(OrderWorkflow, "order-1", order_id=1)

One clean run (in-memory queue, fake clock) learns the boundaries: every lock taken (on a first
pass, read: its lock is written with the pass's first write), every step-log write committed, every
step that returned before its completion is committed (it rides with the pass's next write), and
the moment between a pass's release and the publishing of its continuation.
Then, for each boundary in turn, the workflow runs again from scratch and the process "dies" there:
a ``BaseException`` leaves the pass without releasing its lock or publishing its continuation, and
the open transaction (if any) rolls back. Recovery is what production does: the clock moves on until
the reaper (``REAP_STALE_AFTER``) or the overdue sweep (``RESUME_OVERDUE_GRACE``) would pick the
workflow up, ``reap_stalled()`` and ``resume_overdue()`` run, and so on until nothing is left to do.
Each run must end like the clean one: same state, context and result for the workflow and every
child it spawned, the same steps in the same states with the same results, and no step run more
than once more than in the clean run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

from django.db.models import Q
from django.utils import timezone

from . import conf
from .executor import Delivery, Pass
from .models import ExecutionLog, Workflow
from .steps import StepLogs
from .testing import workflow_env

if TYPE_CHECKING:  # pragma: no cover
    from .testing import WorkflowEnv
    from .workflow import DurableWorkflow

__all__ = ["HardKill", "CrashReport", "CrashTest", "assert_crash_safe"]

#: Lifecycle markers carry ids or timestamps (``$workflow_failure$<error id>``): compared by kind.
_MARKER = re.compile(r"^(\$workflow_[a-z_]+\$).*$")
#: A repetition log is named after its tick's time, which an outage shifts: compared by position.
_REPETITION = re.compile(r"^(durably_repeat\$[^$]*\$)\d+$")


class HardKill(BaseException):
    """The simulated death of the worker process: nothing in chrono_forge catches it."""


@dataclass(frozen=True)
class Boundary:
    number: int
    description: str

    def __str__(self) -> str:
        return f"boundary #{self.number} ({self.description})"


@dataclass
class CrashReport:
    """What :func:`assert_crash_safe` checked: the boundaries it killed at and the clean outcome."""

    boundaries: list[Boundary] = field(default_factory=list)
    clean: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: boundary number -> step runs beyond the clean run's (0 or 1)
    reruns: dict[int, int] = field(default_factory=dict)


class _Killer:
    """Counts boundaries as a run crosses them; raises HardKill at the chosen one."""

    def __init__(self, kill_at: int | None):
        self.kill_at = kill_at
        self.count = 0
        self.passes = 0
        self.dead = False
        self.running: Pass | None = None  # the pass between its lock and its finish
        self.killed: Pass | None = None
        self.seen: list[Boundary] = []
        self.current: str = ""

    def cross(self, description: str) -> None:
        if self.dead:
            return
        self.count += 1
        self.seen.append(Boundary(self.count, f"{self.current}: {description}"))
        if self.count == self.kill_at:
            self.dead, self.killed = True, self.running
            raise HardKill(str(self.seen[-1]))

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap the engine's write points for one run. Patching (not a hook in the engine) keeps
        production code free of test switches, as a real kill leaves no trace in it either."""
        killer = self
        original_acquire, original_finish = Delivery.acquire, Pass.finish
        original_publish = Pass.publish
        original_create, original_update = StepLogs.create, StepLogs.update
        original_flushing = StepLogs.flushing

        def acquire(delivery: Delivery) -> Pass | None:
            run = original_acquire(delivery)
            if run is not None:
                killer.running = run
                killer.passes += 1
                killer.current = f"pass {killer.passes}, {run.row}"
                if run.steps.claim is None:
                    killer.cross("lock taken")
                else:  # a first pass: nothing written yet, the lock rides with the first write
                    killer.cross("lock read, to be written with the pass's first write")
            return run

        def create(steps: StepLogs, step_name: str, **fields: Any):
            log = original_create(steps, step_name, **fields)
            killer.cross(f"{step_name} inserted ({fields.get('state', 'pending')})")
            return log

        def update(steps: StepLogs, log: ExecutionLog, *, unless_cancelled: bool = False, **fields):
            original_update(steps, log, unless_cancelled=unless_cancelled, **fields)
            written = ", ".join(sorted(name for name in fields if name != "modified"))
            killer.cross(f"{log.step_name} updated ({written})")

        def flushing(steps: StepLogs, **options: Any):
            if steps._deferred:  # a step returned; its completion rides with this next write
                pks = {pk for pk, _ in steps._deferred}
                names = sorted(log.step_name for log in steps._rows().values() if log.pk in pks)
                killer.cross(f"{', '.join(names)} returned, completion not yet committed")
            return original_flushing(steps, **options)

        def publish(run: Pass):
            if run.continuation is not None and run.released:
                killer.cross("released, continuation not yet published")
            original_publish(run)

        def finish(run: Pass):
            if run is killer.killed:  # the process is gone: no release, no publish
                return
            original_finish(run)

        with (
            mock.patch.object(Delivery, "acquire", acquire),
            mock.patch.object(Pass, "finish", finish),
            mock.patch.object(Pass, "publish", publish),
            mock.patch.object(StepLogs, "create", create),
            mock.patch.object(StepLogs, "update", update),
            mock.patch.object(StepLogs, "flushing", flushing),
        ):
            yield


class CrashTest:
    """:func:`assert_crash_safe` with options.

    A kill loses what the dead process had not handed over: its lock, its open transaction and
    its unpublished continuation. What it had already enqueued and committed (children's first
    passes, a merge poller) stays queued, as committed queue rows of the ORM broker do.

    ``before_each`` runs before every run (reset external state a step writes, e.g. a fake payment
    gateway); ``start`` fixes the fake clock's start (default: now).

    Recovery takes as long as it would in production (a stale lock is reaped after
    ``REAP_STALE_AFTER``), so context values that record *when* something ran shift by that outage:
    ``context`` maps a workflow's context to what must not change (default: all of it).
    """

    def __init__(
        self,
        workflow_class: type[DurableWorkflow],
        key: str,
        kwargs: dict[str, Any] | None = None,
        *,
        before_each: Callable[[], Any] | None = None,
        start: datetime | None = None,
        context: Callable[[dict[str, Any]], Any] | None = None,
    ):
        self.workflow_class = workflow_class
        self.key = key
        self.kwargs = dict(kwargs or {})
        self.before_each = before_each
        self.start = start or timezone.now()
        self.context = context or (lambda value: value)

    # -- runs -------------------------------------------------------------------------------------
    def family(self):
        """The workflow and every child spawned under it (children are keyed ``<key>$...``)."""
        return Workflow.objects.filter(
            Q(job_class=self.workflow_class.job_class(), key=self.key)
            | Q(key__prefix=f"{self.key}$")
        )

    def run(self, kill_at: int | None) -> tuple[_Killer, str | None]:
        """One run from scratch; returns the killer and, if it died, the HardKill message."""
        self.family().delete()
        if self.before_each is not None:
            self.before_each()
        killer = _Killer(kill_at)
        died = None
        with workflow_env(start=self.start) as env, killer.installed():
            self.workflow_class.perform_later(self.key, **self.kwargs)
            try:
                env.run_all()
            except HardKill as kill:
                died = str(kill)
                self.recover(env)
        return killer, died

    def recover(self, env: WorkflowEnv) -> None:
        """Run what is queued, and the sweeps whenever one would find the dead pass's workflow
        (its lock stale, or its continuation overdue), until neither has anything left."""
        stale_after = conf.reap_stale_after()
        grace = conf.as_timedelta(conf.get("RESUME_OVERDUE_GRACE"))
        for _ in range(env.max_runs):
            pending = env.pending
            due = self.sweep_due(stale_after, grace)
            if pending and (due is None or pending[0].run_at <= max(due, env.now)):
                env.travel_to(max(env.now, pending[0].run_at))
                run = env.dispatcher.pop_due(env.now)
                assert run is not None  # the head was due at env.now
                env._run(run)
            elif due is not None:
                env.travel_to(max(env.now, due) + timedelta(seconds=1))
                Workflow.objects.reap_stalled()
                Workflow.objects.resume_overdue()
            else:
                return
        raise AssertionError(f"recovery ran more than {env.max_runs} tasks without settling")

    def sweep_due(self, stale_after: timedelta, grace: timedelta) -> datetime | None:
        """When the reaper or the overdue sweep would first pick up a workflow of the family."""
        running = self.family().filter(state=Workflow.STATE.running, locked_at__isnull=False)
        idle = self.family().filter(state=Workflow.STATE.idle, next_run_at__isnull=False)
        due = [locked_at + stale_after for locked_at in running.values_list("locked_at", flat=True)]
        due += [run_at + grace for run_at in idle.values_list("next_run_at", flat=True)]
        # A cancelled row with a due time waits for its on_cancel hook (or a forced retry); a
        # dead pass's lock on it holds the hook until the lock is older than MAX_DURATION.
        cancelled = self.family().filter(state=Workflow.STATE.cancelled, next_run_at__isnull=False)
        for run_at, locked_at in cancelled.values_list("next_run_at", "locked_at"):
            held = locked_at + conf.max_duration() if locked_at is not None else run_at
            due.append(max(run_at + grace, held))
        return min(due, default=None)

    def outcome(self) -> dict[tuple[str, str], dict[str, Any]]:
        """State, context, result and steps of every workflow of the family."""
        result = {}
        for row in self.family().order_by("pk"):
            steps: dict[str, dict[str, Any]] = {}
            ticks: dict[str, int] = {}
            for log in ExecutionLog.objects.filter(workflow=row).order_by("step_name"):
                name = _MARKER.sub(r"\1", log.step_name)
                if repetition := _REPETITION.match(name):
                    prefix = repetition.group(1)
                    ticks[prefix] = ticks.get(prefix, 0) + 1
                    name = f"{prefix}#{ticks[prefix]}"
                steps[name] = {"state": log.state, "attempts": log.attempts, "result": log.result}
            result[(row.job_class, row.key)] = {
                "state": row.state,
                "context": self.context(row.context),
                "result": row.result,
                "steps": steps,
            }
        return result

    # -- the check --------------------------------------------------------------------------------
    def assert_safe(self) -> CrashReport:
        killer, _ = self.run(kill_at=None)
        report = CrashReport(boundaries=killer.seen, clean=self.outcome())
        if not report.boundaries:
            raise AssertionError(
                f"{self.workflow_class.__name__}({self.key}): the clean run crossed no step "
                "boundary (did perform_later run a pass?)"
            )
        for boundary in report.boundaries:
            _, died = self.run(kill_at=boundary.number)
            if died is None:
                raise AssertionError(f"killed at {boundary}: the run never reached it again")
            report.reruns[boundary.number] = self.compare(boundary, report.clean, self.outcome())
        self.family().delete()
        return report

    def compare(self, boundary: Boundary, clean: dict, crashed: dict) -> int:
        where = f"killed at {boundary}"
        if set(crashed) != set(clean):
            missing = sorted(set(clean) - set(crashed))
            extra = sorted(set(crashed) - set(clean))
            raise AssertionError(f"{where}: workflows differ: missing {missing}, extra {extra}")
        reruns = 0
        for identity, expected in clean.items():
            got = crashed[identity]
            label = f"{identity[0].rsplit('.', 1)[-1]}({identity[1]})"
            if got["state"] != expected["state"]:
                raise AssertionError(
                    f"{where}: {label} ended {got['state']!r}, the uninterrupted run "
                    f"{expected['state']!r} (not recovered, or recovered differently)"
                )
            if got["context"] != expected["context"]:
                raise AssertionError(
                    f"{where}: {label} context {got['context']!r}, the uninterrupted run "
                    f"{expected['context']!r}"
                )
            if got["result"] != expected["result"]:
                raise AssertionError(
                    f"{where}: {label} result {got['result']!r}, the uninterrupted run "
                    f"{expected['result']!r}"
                )
            if set(got["steps"]) != set(expected["steps"]):
                missing = sorted(set(expected["steps"]) - set(got["steps"]))
                extra_steps = sorted(set(got["steps"]) - set(expected["steps"]))
                raise AssertionError(
                    f"{where}: {label} steps differ from the uninterrupted run's: missing "
                    f"{missing}, extra {extra_steps}"
                )
            for name, step in expected["steps"].items():
                seen = got["steps"][name]
                extra = seen["attempts"] - step["attempts"]
                if seen["state"] != step["state"]:
                    raise AssertionError(
                        f"{where}: {label} step {name} is {seen['state']!r}, the uninterrupted "
                        f"run {step['state']!r}"
                    )
                if extra < 0 or extra > 1:
                    raise AssertionError(
                        f"{where}: {label} step {name} ran {seen['attempts']} time(s), the "
                        f"uninterrupted run {step['attempts']} (a kill may re-run a step once)"
                    )
                if extra == 0 and seen["result"] != step["result"]:
                    raise AssertionError(
                        f"{where}: {label} step {name} returned {seen['result']!r}, the "
                        f"uninterrupted run {step['result']!r}"
                    )
                reruns += extra
        if reruns > 1:
            raise AssertionError(
                f"{where}: {reruns} step runs more than the uninterrupted run; one kill may re-run "
                "at most one step once"
            )
        return reruns


def assert_crash_safe(
    workflow_class: type[DurableWorkflow], key: str, /, **kwargs: Any
) -> CrashReport:
    """Run ``workflow_class.perform_later(key, **kwargs)`` once cleanly, then once per step boundary
    with a hard kill there and production's recovery; raise ``AssertionError`` naming the boundary
    if a run does not end like the clean one. Returns a :class:`CrashReport`.

    Needs database access (e.g. pytest's ``db`` fixture); the workflow's rows (and its children's)
    are deleted between runs and at the end. Options: :class:`CrashTest`.
    """
    return CrashTest(workflow_class, key, kwargs).assert_safe()
