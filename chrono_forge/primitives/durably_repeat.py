"""``durably_repeat``: run a method on a fixed grid, ``start_at + n * every``, until ``till``.

Two kinds of rows:

* the coordination log ``durably_repeat$<name>`` (read with the per-pass bulk read): the settings,
  the grid's ``start_at``, ``last_execution_at`` (the scheduled time of the last tick handled) and
  ``next_execution_at`` (the tick the schedule waits for);
* one repetition log per tick, ``durably_repeat$<name>$<unix seconds>``, with ``scheduled_for``,
  ``timeout_at`` and ``parent_id``. They grow without bound, so they never enter the bulk read: the
  pass that runs a tick looks its row up by name (one SELECT), and only for a tick that may exist.

Each pass: ``till`` true -> the step completes. Otherwise the due tick runs (its first attempt
recorded in the INSERT), with its own retry budget (``retry_policy``, else the class default, else
the step default); a tick that used its budget fails and the schedule moves on
(``on_error="continue"``) or the workflow stalls (``"fail_workflow"``; an operator retry runs the
tick again with a fresh budget). A tick whose worker died in it counts as a failed attempt
(``StepAttemptLost``), as in ``durably_execute``. After each tick ``till`` is checked again, so the
workflow goes on without waiting one more interval; else the pass halts with a continuation at the
next tick (``Workflow.next_run_at``).

A tick not started within ``timeout`` of its scheduled time is missed. After downtime the missed
ticks are skipped in O(1) (closed form: intervals are fixed durations, exact in UTC) and recorded as
ONE summary row (state failed, ``TimeoutError``, ``metadata.fast_forwarded`` = how many), then the
first tick still inside its window runs. A year of a 1-second schedule costs the same few statements
as a minute of it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from .. import clock, conf, telemetry
from ..exceptions import HaltExecution, InvalidStepArgument
from ..models import ExecutionLog
from ..payloads import json_pk
from ..steps import (
    COMPLETED,
    FAILED,
    FAILURE,
    PENDING,
    STEP_COLUMNS,
    attempt_lost,
    callsite,
    duration_arg,
    halt_or_fail,
    lost_attempt,
    record_failure,
    replay_failure,
    resolve_method,
)
from ..validation import step_name

if TYPE_CHECKING:  # pragma: no cover
    from ..executor import Pass
    from ..retry import AnyRetryPolicy
    from ..workflow import DurableWorkflow

ON_ERROR = ("continue", "fail_workflow")
TIMEOUT_ERROR = "TimeoutError"


def durably_repeat(
    workflow: DurableWorkflow,
    method: Any,
    *,
    every: timedelta | float,
    till: Any,
    start_at: datetime | None = None,
    retry_policy: Any = None,
    timeout: timedelta | float = timedelta(hours=1),
    on_error: str = "continue",
    name: str | None = None,
) -> None:
    run = workflow._pass
    where = callsite("durably_repeat", method, name)
    func, method_name = resolve_method(workflow, method, kind=where)
    step = step_name("durably_repeat", name if name is not None else method_name)
    run.claim_step(step)
    every = duration_arg(every, where=step, what="every", positive=True)
    if every < timedelta(seconds=1):  # repetition logs are keyed by whole unix seconds
        raise InvalidStepArgument(f"{step}: every must be at least 1 second, got {every}")
    # A timeout <= 0 is allowed: every tick is missed (skipped).
    timeout = duration_arg(timeout, where=step, what="timeout")
    if on_error not in ON_ERROR:
        raise InvalidStepArgument(
            f"{step}: on_error must be 'continue' or 'fail_workflow', got {on_error!r}"
        )
    if start_at is not None and not (
        isinstance(start_at, datetime) and timezone.is_aware(start_at)
    ):
        raise InvalidStepArgument(
            f"{step}: start_at must be a timezone-aware datetime, got {start_at!r}"
        )
    till_check, till_name = resolve_till(workflow, till, step)
    passes_time = takes_scheduled_time(func, step)
    try:
        policy = run.step_policy(retry_policy)
    except (TypeError, ValueError) as error:
        raise InvalidStepArgument(f"{step}: retry_policy: {error}") from None

    coordination = run.steps.get(step)
    if coordination is not None and coordination.state == COMPLETED:
        return
    if coordination is not None and coordination.state == FAILED:
        # it stalled the workflow (fail_workflow) and perform caught the error: replay the failure
        replay_failure(coordination)
    settings = {
        "method": method_name,
        "every": every.total_seconds(),
        "till": till_name,
        "timeout": timeout.total_seconds(),
        "on_error": on_error,
    }
    call = (lambda at: func(at)) if passes_time else (lambda at: func())
    Repeat(
        run,
        step,
        coordination,
        settings,
        every,
        timeout,
        on_error,
        policy,
        call,
        till_check,
        start_at,
    ).pass_()


@dataclass
class Repeat:
    run: Pass
    step: str
    coordination: ExecutionLog | None
    settings: dict[str, Any]
    every: timedelta
    timeout: timedelta
    on_error: str
    policy: AnyRetryPolicy
    call: Callable[[datetime], Any]
    till: Callable[[], Any]
    start_at: datetime | None

    @property
    def coordination_log(self) -> ExecutionLog:
        """The coordination log: :meth:`pass_` finds or creates it before anything reads it."""
        assert self.coordination is not None
        return self.coordination

    def pass_(self) -> None:
        now = clock.now()
        if self.till():
            self.finish(now)
            return
        if self.coordination is None:
            due = self.start_at or now  # fixed here: replays never move the grid
            self.coordination = self.run.steps.create(
                self.step,
                state=PENDING,
                attempts=1,
                started_at=now,
                last_executed_at=now,
                metadata={
                    **self.settings,
                    "start_at": due.isoformat(),
                    "last_execution_at": None,
                    "next_execution_at": due.isoformat(),
                },
            )
            known_new = True  # no repetition can exist yet
        else:
            due = datetime.fromisoformat(self.coordination.metadata["next_execution_at"])
            known_new = False

        if due > now:
            self.halt_until(due)
        rep = None if known_new else self.find(due)
        if now > due + self.timeout:
            # the due tick was missed: skip to the first tick still in its window
            due = self.catch_up(due, rep, now)
            if due > now:
                self.halt_until(due)
            rep = None  # catch_up only lands on ticks past the schedule, which have no row yet
        handled = rep is not None and (
            rep.state == COMPLETED or (rep.state == FAILED and self.on_error == "continue")
        )
        if not handled:  # (handled: a pass died after the tick, before moving the schedule on)
            self.tick(due, rep, now)
        done = bool(self.till())
        self.advance(due, clock.now(), finished=done)
        if not done:
            self.halt_until(due + self.every)

    # -- one tick ----------------------------------------------------------------------------------
    def tick(self, due: datetime, rep: ExecutionLog | None, now: datetime) -> None:
        """Run the method for ``due`` (one attempt); halt for a retry, or fail the tick."""
        steps = self.run.steps
        if rep is not None and rep.state == FAILED:
            # fail_workflow stalled on it and an operator retried: a fresh budget for this tick
            steps.update(
                rep,
                state=PENDING,
                attempts=1,
                last_executed_at=now,
                error_class="",
                error_message="",
                metadata=self.rep_metadata(due),
            )
            steps.attempted.add(rep.step_name)
        elif rep is not None and attempt_lost(self.run, rep):  # its worker died in the tick
            self.failed(rep, lost_attempt(rep))
            return  # given up, on_error="continue": the schedule moves on
        elif rep is None:
            rep = steps.record_attempt(
                repetition_name(self.step, due),
                None,
                state=PENDING,
                metadata=self.rep_metadata(due),
            )
        else:
            rep = steps.record_attempt(rep.step_name, rep)
        try:
            with telemetry.step_span(self.run, self.step, rep.attempts):
                self.call(due)
        except HaltExecution:
            raise
        except BaseException as error:  # SystemExit & co. too: recorded, then let through
            self.failed(rep, error)
            return
        steps.update(rep, state=COMPLETED, completed_at=clock.now())

    def failed(self, rep: ExecutionLog, error: BaseException) -> None:
        """The tick's attempt failed: halt for a retry, stall (``fail_workflow``) or return (the
        tick is given up and the schedule moves on)."""
        fail_workflow = self.on_error == "fail_workflow"
        failure = record_failure(self.run, rep, error, self.policy)
        if failure is not None and fail_workflow:
            self.run.steps.update(
                self.coordination_log,
                last_executed_at=clock.now(),
                state=FAILED,
                error_class=rep.error_class,
                error_message=rep.error_message,
                metadata={**self.coordination_log.metadata, FAILURE: str(failure)},
            )
        if failure is None or fail_workflow or not isinstance(error, Exception):
            raise halt_or_fail(self.run, error, failure, stalls=fail_workflow)

    # -- missed ticks ------------------------------------------------------------------------------
    def catch_up(self, due: datetime, rep: ExecutionLog | None, now: datetime) -> datetime:
        """Skip every missed tick from ``due`` on; returns the first tick still in its window."""
        if rep is not None and rep.state == PENDING:  # started, then ran out of time while retrying
            self.run.steps.update(
                rep,
                state=FAILED,
                error_class=TIMEOUT_ERROR,
                error_message=(
                    f"Execution timed out: not completed by {rep.metadata.get('timeout_at')}"
                ),
            )
        skip_from = due if rep is None else due + self.every
        first, skipped = fast_forward(skip_from, self.every, now - self.timeout)
        last = first - self.every
        # The summary row and the schedule move together (a crash in between would skip twice).
        with transaction.atomic(using=conf.database()):
            if skipped:
                self.run.steps.create(
                    repetition_name(self.step, skip_from),
                    state=FAILED,
                    attempts=0,
                    started_at=now,
                    last_executed_at=now,
                    error_class=TIMEOUT_ERROR,
                    error_message=f"{skipped} missed repetition(s) skipped, "
                    f"{skip_from.isoformat()} to {last.isoformat()}",
                    metadata={
                        "scheduled_for": skip_from.isoformat(),
                        "parent_id": json_pk(self.coordination_log.pk),
                        "fast_forwarded": skipped,
                        "skipped_from": skip_from.isoformat(),
                        "skipped_to": last.isoformat(),
                    },
                )
            self.advance(last, now)
        return first

    # -- the coordination log ----------------------------------------------------------------------
    def advance(self, handled: datetime, now: datetime, *, finished: bool = False) -> None:
        """The tick ``handled`` is done with: the schedule moves to the next one (or completes)."""
        metadata = {
            **self.coordination_log.metadata,
            **self.settings,
            "last_execution_at": handled.isoformat(),
            "next_execution_at": None if finished else (handled + self.every).isoformat(),
        }
        fields: dict[str, Any] = {"state": COMPLETED, "completed_at": now} if finished else {}
        self.run.steps.update(
            self.coordination_log, last_executed_at=now, metadata=metadata, **fields
        )

    def finish(self, now: datetime) -> None:
        if self.coordination is None:
            self.run.steps.create_completed(
                self.step,
                now,
                metadata={**self.settings, "last_execution_at": None, "next_execution_at": None},
            )
        else:
            self.run.steps.update(
                self.coordination,
                state=COMPLETED,
                completed_at=now,
                metadata={**self.coordination.metadata, "next_execution_at": None},
            )

    def halt_until(self, run_at: datetime):
        self.run.continue_at(run_at)
        raise HaltExecution()

    def find(self, due: datetime) -> ExecutionLog | None:
        return (
            ExecutionLog.objects.filter(
                workflow_id=self.run.row.pk, step_name=repetition_name(self.step, due)
            )
            .only(*STEP_COLUMNS)
            .one()
        )

    def rep_metadata(self, due: datetime) -> dict[str, Any]:
        return {
            "scheduled_for": due.isoformat(),
            "timeout_at": (due + self.timeout).isoformat(),
            "parent_id": json_pk(self.coordination_log.pk),
        }


def repetition_name(step: str, scheduled_for: datetime) -> str:
    return f"{step}${int(scheduled_for.timestamp())}"


def fast_forward(due: datetime, every: timedelta, cutoff: datetime) -> tuple[datetime, int]:
    """The first tick ``due + n * every`` at or after ``cutoff`` and ``n`` (ticks skipped), O(1)."""
    if due >= cutoff:
        return due, 0
    whole, rest = divmod(cutoff - due, every)
    skipped = whole + (1 if rest else 0)
    return due + skipped * every, skipped


def resolve_till(workflow: DurableWorkflow, till: Any, step: str) -> tuple[Callable[[], Any], str]:
    """``till``: a method name or bound method (called with no argument), or a callable(context)."""
    if isinstance(till, str) or (callable(till) and getattr(till, "__self__", None) is workflow):
        return resolve_method(workflow, till, kind=f"{step} till")
    if callable(till):
        return (lambda: till(workflow.context)), getattr(till, "__qualname__", repr(till))
    raise InvalidStepArgument(
        f"{step}: till must be a method name, a bound method of this workflow or a callable "
        f"taking the context, got {till!r}"
    )


def takes_scheduled_time(func: Callable[..., Any], step: str) -> bool:
    """True when ``func`` accepts a positional argument (it then gets the tick's scheduled time)."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [
        p.name
        for p in parameters
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if len(required) > 1 or (required and required[0] not in {p.name for p in positional[:1]}):
        raise InvalidStepArgument(
            f"{step}: {func.__name__} may take at most one argument, the scheduled time; "
            f"it requires {', '.join(required)}"
        )
    return bool(positional) or any(p.kind == p.VAR_POSITIONAL for p in parameters)
