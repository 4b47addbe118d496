"""One pass of a workflow, top to bottom.

    Delivery.acquire(): take the lock  ->  the Pass (row, context, step logs), or None
    Pass.execute():     run perform()  ->  completion gate  ->  complete
                                   `-> halt (continuation) / stall / workflow-level retry or fail
    finally: save the context and release the lock (one UPDATE), then publish the continuation.

The lock is taken with ``select_for_update()`` inside a short transaction (on SQLite the
database-wide write lock of ``transaction_mode="IMMEDIATE"`` does the same job). Step bodies never
run inside a transaction. The continuation is published only after the lock is released, so a
zero-delay continuation can never lose the lock race, and it is published even if saving the context
failed.

Each continuation carries a token (its due time, also stored in ``Workflow.next_run_at``). A
delivery whose token no longer matches was superseded by a later schedule and exits quietly, so
duplicate deliveries and overlapping wake-ups never multiply pending continuations.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeGuard

from django.db import transaction

from . import clock, conf, deadlines, dispatch, on_cancel, signals, step_names, telemetry
from .context import Context
from .dispatch import token_for
from .errors import record_error
from .exceptions import (
    ConcurrentExecutionError,
    ContextValidationError,
    DuplicateStepName,
    ExecutionFailedError,
    HaltExecution,
    InvalidStepArgument,
    InvalidWorkflowResult,
    LongRunningConcurrentExecutionError,
    NotExecutableError,
    ReplayDivergence,
)
from .models import ErrorLog, ExecutionLog, Workflow
from .payloads import json_pk
from .retry import AnyRetryPolicy, RetryPolicy, coerce
from .steps import COMPLETED, FAILED, FAILURE, PENDING, REPETITION_LOG_PATTERN, StepLogs
from .validation import to_json

if TYPE_CHECKING:  # pragma: no cover
    from django.db.models import QuerySet
    from django.dispatch import Signal

    from .primitives.branch import Dispatching
    from .workflow import DurableWorkflow

logger = logging.getLogger("chrono_forge")

#: Columns the lock SELECT loads: everything a pass needs, nothing it does not.
LOCK_COLUMNS = (
    "id",
    "job_class",
    "key",
    "kwargs",
    "options",
    "context",
    "state",
    "locked_by",
    "locked_at",
    "started_at",
    "next_run_at",
    "parked_on",
    "parked_since",
    "deadline_at",
    "wake_requested",
    "parent_execution_log_id",
)

COMPLETION_MARKER = step_names.COMPLETION_MARKER

#: Step metadata that bounds one try and starts afresh on an operator retry: per-error retry counts,
#: the failure a failed step replays, and a wait_until's deadline and outcome (a retried wait_until
#: gets a fresh timeout).
RESET_ON_RETRY = frozenset({"retry_counts", FAILURE, "timeout_at", "result"})

#: Workflow-level retries of an unbounded class policy stop here (a safety guard).
WORKFLOW_ATTEMPTS_GUARD = 10

STATE = Workflow.STATE


class RunCancelled(Exception):
    """Internal: the final release found the run cancelled; the final transaction rolls back."""


class LockClaimLost(ConcurrentExecutionError):
    """A first pass's deferred lock found the run taken by another delivery: this pass exits."""


class Relock:
    """``acquire_delivered()``'s answer when only the locked path (``select_for_update``) can
    decide."""


RELOCK = Relock()


#: The pass running in this thread (or task), if any: calls that must never happen inside a
#: workflow (``wait_for_result``) check it.
_current: contextvars.ContextVar[Pass | None] = contextvars.ContextVar(
    "chrono_forge_current_pass", default=None
)


def current_pass() -> Pass | None:
    """The pass running in this context, or None outside any workflow."""
    return _current.get()


def storable_workflow_result(job_class: str, value: Any) -> Any:
    """The JSON form of what ``perform()`` returned, checked like a step result (JSON that every
    database stores unchanged, at most RESULT_MAX_BYTES); else InvalidWorkflowResult."""
    try:
        return to_json(
            value,
            f"the return value of {job_class}.perform()",
            max_bytes=conf.get("RESULT_MAX_BYTES"),
            setting="RESULT_MAX_BYTES",
        )
    except (TypeError, ValueError) as error:
        raise InvalidWorkflowResult(
            f"{error}. Nothing was stored and the workflow is stalled: return JSON (or store large "
            "data elsewhere and return a reference), then retry it"
        ) from None


class Delivery:
    """One delivery of a pass (a task payload, a ``perform_now``): what it asks for, before the
    lock is taken. ``acquire()`` takes the lock and builds the :class:`Pass` that runs; a delivery
    that finds nothing to run (no row, a superseded token, a finished run) builds none."""

    def __init__(
        self,
        workflow_class: type[DurableWorkflow] | None,
        key: str,
        *,
        job_class: str | None = None,
        attempt: int = 0,
        retry_counts: dict[str, int] | None = None,
        retry_workflow: bool = False,
        token: str | None = None,
        stale_after: float | None = None,
        trace_context: dict[str, str] | None = None,
        **internal: Any,
    ):
        if stale_after is not None and (
            not isinstance(stale_after, (int, float))
            or isinstance(stale_after, bool)
            or stale_after <= 0
        ):
            raise ValueError(
                f"stale_after must be a positive number of seconds (a reaper's lock age), "
                f"got {stale_after!r}"
            )
        # None only in a BlockedPass (its class is not registered here), which never binds the
        # class, runs user code or asks it for a retry policy.
        self.workflow_class: type[DurableWorkflow] = workflow_class  # type: ignore[assignment]
        self.job_class = job_class or self.workflow_class.job_class()
        self.key = key
        self.attempt = attempt
        self.retry_counts = dict(retry_counts or {})
        self.retry_workflow = retry_workflow
        self.token = token
        # A reaper asked for locks older than this to be taken, even below MAX_DURATION.
        self.stale_after = stale_after
        # the enqueuer's trace context (OpenTelemetry), the parent of this pass's span
        self.trace_context = trace_context
        # extra continuation arguments (e.g. wait_condition), for primitives
        self.internal = internal
        self.run_id = uuid.uuid4().hex
        self.db = conf.database()
        #: the pass this delivery ran, None while it has not (or found nothing to run): telemetry
        #: reads the outcome from it
        self.acquired: Pass | None = None

    def execute(self) -> Workflow | None:
        """Run one pass; returns the workflow row, or None when there was nothing to run."""
        with telemetry.pass_span(self):
            run = self.acquired = self.acquire()
            if run is None:
                return None
            run.execute()
            return run.row

    # -- lock --------------------------------------------------------------------------------------
    def acquire(self) -> Pass | None:
        """Take the lock and build the pass (its row, context and step-log view), or None when
        there is nothing to run; ConcurrentExecutionError when a live pass holds the lock."""
        now = clock.now()
        if self.token is not None and not self.retry_workflow and self.workflow_class is not None:
            delivered = self.acquire_delivered(now)
            if not isinstance(delivered, Relock):
                return delivered
        with transaction.atomic(using=self.db):
            row = (
                Workflow.objects.select_for_update()
                .only(*LOCK_COLUMNS)
                .filter(job_class=self.job_class, key=self.key)
                .one()
            )
            if not self.still_due(row):
                return None
            # A forced retry of a cancelled run restarts its deadline (else it is cancelled again).
            restarted = bool(
                self.retry_workflow
                and row.state == STATE.cancelled
                and self.internal.get("resume_cancelled")
            )
            if self.retry_workflow and (
                row.state in Workflow.RETRYABLE_STATES
                or (row.state == STATE.cancelled and self.internal.get("resume_cancelled"))
            ):
                self.prepare_retry(row, now)
            if self.token is not None and self.workflow_class and on_cancel.pending(row):
                # the delivery of its on_cancel hook: the pass runs the hook instead of perform()
                if not on_cancel.claim(self, row, now):
                    return None
                return Pass(self, row, on_cancel_step=row.parked_on)
            if not self.executable(row):
                return None
            holder = self.lock_holder(row, now)
            if holder and self.token is None and not row.wake_requested:
                # An external wake-up must not be lost: the holder publishes it when it releases.
                Workflow.objects.filter(pk=row.pk).update(wake_requested=True)
            if not holder:
                first_pass = row.started_at is None
                fields = self.lock_fields(row, now, restarted=restarted)
                due = fields.get("deadline_at", row.deadline_at)
                if due is not None and due <= now:  # a late delivery: cancel instead of running
                    stale = row.locked_by is not None
                    deadlines.cancel_run(row, now, context=row.context, unlock=stale)
                    return None
                Workflow.objects.filter(pk=row.pk).update(**fields)
                for name, value in fields.items():
                    setattr(row, name, value)
        if holder:
            raise self.locked_by_other(row, holder)
        run = Pass(self, row, first_pass=first_pass)
        if first_pass:
            run.announce(signals.workflow_started)
        return run

    def acquire_delivered(self, now: datetime) -> Pass | None | Relock:
        """The lock of a scheduled delivery (it carries a token), without ``select_for_update``:
        one plain read, then a conditional UPDATE that takes the lock only if none of the columns
        the read decided on (state, lock, due time, wake-up, start) changed since, which is what
        the row lock would have guaranteed. A first pass (its row was just written) defers that
        UPDATE to its first write, in the same transaction (one commit less per run: the step
        INSERT before the first body commits the lock with it). Returns ``RELOCK`` when only the
        locked path can decide: an on_cancel hook is due, a deadline passed, or the row changed
        between the read and the UPDATE."""
        row = Workflow.objects.only(*LOCK_COLUMNS).filter(job_class=self.job_class, key=self.key)
        row = row.one()
        if not self.still_due(row):
            return None
        if on_cancel.pending(row):
            return RELOCK
        if not self.executable(row):
            return None
        holder = self.lock_holder(row, now)
        if holder:
            raise self.locked_by_other(row, holder)
        first_pass = row.started_at is None
        fields = self.lock_fields(row, now, restarted=False)
        due = fields.get("deadline_at", row.deadline_at)
        if due is not None and due <= now:
            return RELOCK
        unchanged = Workflow.objects.filter(
            pk=row.pk,
            state=row.state,
            locked_by=row.locked_by,
            locked_at=row.locked_at,
            next_run_at=row.next_run_at,
            wake_requested=row.wake_requested,
            started_at=row.started_at,
        )
        deferred = first_pass and row.locked_by is None
        if not deferred and not unchanged.update(**fields):
            return RELOCK
        for name, value in fields.items():
            setattr(row, name, value)
        run = Pass(self, row, first_pass=first_pass)
        if deferred:
            run.steps.claim = partial(run.claim_lock, unchanged, fields)
        elif first_pass:
            run.announce(signals.workflow_started)
        return run

    def still_due(self, row: Workflow | None) -> TypeGuard[Workflow]:
        """Whether the delivery has a run to look at: ``row`` exists and, for a scheduled delivery
        (a token), is still due at that token (a superseded continuation exits). Logs why not."""
        if row is None:
            logger.warning(
                "chrono_forge: %s(%s) does not exist; nothing to run", self.job_class, self.key
            )
            return False
        if self.token is not None and (
            row.next_run_at is None or row.next_run_at != datetime.fromisoformat(self.token)
        ):
            logger.info("chrono_forge: %s: superseded continuation (%s) exits", row, self.token)
            return False
        return True

    def executable(self, row: Workflow) -> bool:
        """Whether ``row``'s state lets a pass run (logs why not: finished, cancelled)."""
        if row.state not in Workflow.EXECUTABLE_STATES:
            logger.info("chrono_forge: %s is %s; nothing to run", row, row.state)
            return False
        return True

    def lock_holder(self, row: Workflow, now: datetime) -> str | None:
        """The run holding ``row``'s lock, if that lock is still live (else it may be taken)."""
        return row.locked_by if row.locked_at and row.locked_at > now - self.lock_ttl() else None

    def lock_fields(self, row: Workflow, now: datetime, *, restarted: bool) -> dict[str, Any]:
        """The columns the lock UPDATE writes; a first pass also starts the run and its deadline."""
        first_pass = row.started_at is None
        fields: dict[str, Any] = {
            "locked_by": self.run_id,
            "locked_at": now,
            "state": STATE.running,
            "wake_requested": False,
            "modified": now,
        }
        if first_pass:
            fields["started_at"] = now
        if first_pass or restarted:  # the deadline counts from here, in the same UPDATE
            deadline = deadlines.own_deadline(self.workflow_class, row.options or {})
            if deadline is not None:
                fields["deadline_at"] = now + deadline
            elif restarted:
                fields["deadline_at"] = None
        return fields

    def locked_by_other(self, row: Workflow, holder: str) -> ConcurrentExecutionError:
        return ConcurrentExecutionError(
            f"{self.job_class}({self.key}) is locked by run {holder} since "
            f"{row.locked_at.isoformat() if row.locked_at else '?'}; run {self.run_id} exits "
            f"(lock strategy: select_for_update, stale after {conf.max_duration()})"
        )

    def lock_ttl(self) -> timedelta:
        """How long a lock holds: MAX_DURATION, or less when a reaper said so."""
        if self.stale_after is None:
            return conf.max_duration()
        return min(conf.max_duration(), timedelta(seconds=self.stale_after))

    def prepare_retry(self, row: Workflow, now: datetime) -> None:
        """An operator retry: mark it, give failed steps a fresh budget, make the row runnable."""
        ExecutionLog.objects.get_or_create(
            workflow_id=row.pk,
            step_name=step_names.retry_marker(int(now.timestamp())),
            defaults={
                "state": COMPLETED,
                "attempts": 1,
                "started_at": now,
                "last_executed_at": now,
                "completed_at": now,
                "created": now,
                "modified": now,
            },
        )
        # Repetition logs are history (durably_repeat retries its own failed tick): left as is.
        # A failed on_cancel hook is the history of an earlier cancellation: it stays failed.
        failed = (
            ExecutionLog.objects.filter(workflow_id=row.pk, state=FAILED)
            .exclude(step_name__regex=REPETITION_LOG_PATTERN)
            .exclude(step_name__prefix=step_names.ON_CANCEL_MARKER_PREFIX)
        )
        for log in failed.only("id", "metadata"):
            metadata = {k: v for k, v in (log.metadata or {}).items() if k not in RESET_ON_RETRY}
            ExecutionLog.objects.filter(pk=log.pk).update(
                state=PENDING, attempts=0, metadata=metadata, modified=now
            )
        if row.state == STATE.cancelled:  # a forced retry: the run is no longer cancelled
            Workflow.objects.filter(pk=row.pk).update(
                cancelled_at=None, cancel_reason="", parked_on=None, parked_since=None
            )
            row.parked_on, row.parked_since = None, None  # nor is its on_cancel hook due
        row.state, row.locked_by, row.locked_at = STATE.idle, None, None


class Pass:
    """One pass of a workflow, built by :meth:`Delivery.acquire` once the lock is held: the locked
    row, its context, its step-log view, and what the pass decided so far (its continuation, the
    gate it parks on, its outcome). Primitives reach it as ``workflow._pass`` and call its
    methods (``claim_step``, ``step_policy``, ``continue_at``, ``expect_at``, ``park``, ...)."""

    def __init__(
        self,
        delivery: Delivery,
        row: Workflow,
        *,
        first_pass: bool = False,
        on_cancel_step: str | None = None,
    ):
        self.delivery = delivery
        self.workflow_class = delivery.workflow_class
        self.job_class = delivery.job_class
        self.key = delivery.key
        self.run_id = delivery.run_id
        self.db = delivery.db
        self.row = row
        self.context = Context(row.context)
        # the on_cancel hook's step this delivery runs instead of perform() (chrono_forge.on_cancel)
        self.on_cancel_step = on_cancel_step
        if on_cancel_step is not None:  # the hook pass reads its one step log itself
            self.steps = StepLogs(row.pk, known_empty=True)
        else:
            self.steps = StepLogs(
                row.pk,
                known_empty=first_pass,
                before_attempt=partial(self.stop_if_cancelled, fold=True),
                on_new_step=self.new_step,
            )
        self.final_state = STATE.idle
        self.released = False
        self.continuation: tuple[datetime, dict[str, Any]] | None = None
        # A due time with nothing enqueued by this pass (a merge poll's), for the overdue sweep.
        self.expected_at: datetime | None = None
        # The step this pass parks on with nothing scheduled (a continue_if), recorded at release.
        self.parked_on: str | None = None
        # branches opened in this pass (the completion gate checks they were merged)
        self.branches: dict[str, ExecutionLog] = {}
        # the branch whose dispatch callable is running (the target of spawn and spawn_each)
        self.dispatching: Dispatching | None = None
        # step name -> the call site that used it in this pass (a second use is a programming error)
        self.claimed_steps: dict[str, str] = {}
        # True while perform() runs: what replays the run's history (divergence is judged there)
        self.replaying = False
        # the SystemExit/KeyboardInterrupt/... a step already recorded before letting it through
        self.exit_error: BaseException | None = None
        # why the run failed or stalled, for the signal sent once that state is committed
        self.outcome_error: BaseException | None = None
        # the run was cancelled while this pass held its lock (the release keeps ``cancelled``)
        self.cancelled = False
        self.finalizing = False  # inside final_transaction()
        self.checked_after = 0  # bodies attempted when the pass last checked for a cancel
        self.past_deadline = False  # stopped at a boundary past deadline_at: finish() cancels

    # -- the pass ----------------------------------------------------------------------------------
    def execute(self) -> None:
        """Run perform() (or the on_cancel hook), then finish: release the lock and publish."""
        current = _current.set(self)
        if self.on_cancel_step is not None:
            try:
                on_cancel.run_hook(self)
            finally:
                _current.reset(current)
            return
        try:
            self.run(self.workflow_class._bind(self.row, self))
        except BaseException as error:
            if not isinstance(error, Exception) and error is not self.exit_error:
                # The worker is going down outside a step body: a workflow-level failure, so
                # the release below leaves the run scheduled for a retry (or failed), never
                # idle with nothing scheduled.
                self.retry_or_fail(error)
            raise
        finally:
            _current.reset(current)
            self.finish()

    def run(self, workflow: DurableWorkflow) -> None:
        try:
            self.replaying = True
            try:
                returned = workflow.perform(**self.row.kwargs)
            finally:
                self.replaying = False
            workflow._before_completion()
            # A value that cannot be stored is a programming error: it stalls below, with the
            # reason recorded, before anything of the completion is written.
            result = storable_workflow_result(self.workflow_class.__qualname__, returned)
        except HaltExecution:
            return  # a primitive scheduled a continuation (or parked with nothing scheduled)
        except LockClaimLost:
            raise  # another delivery runs it: nothing of this pass was written
        except ExecutionFailedError as error:
            self.stall(error, recorded=error.recorded)
            return
        except NotExecutableError as error:
            self.stall(error, recorded=getattr(error, "recorded", False))
            raise
        except ContextValidationError as error:
            # The same code writes the same bad value on every retry: stall for a fix instead.
            self.stall(error, recorded=False)
            return
        except Exception as error:
            self.retry_or_fail(error)
            return
        self.complete(result)

    def stop_if_cancelled(self, *, fold: bool = False) -> bool:
        """A primitive boundary: before a step body (or condition) starts, a run cancelled since
        this pass took the lock halts (no further body starts; the release keeps ``cancelled``).
        Checked only when some body ran since the last check: the pass's first body is not (the
        lock read the state just before it). A run past its ``deadline_at`` halts too, without a
        statement here (a boundary may be inside a step's transaction, which the halt rolls
        back): ``finish()`` cancels it.

        The check is one indexed SELECT, or none with ``fold`` (an attempt's write follows) when a
        finished step's completion is still to be written: then this returns True and that
        completion's UPDATE, in the attempt's transaction, checks the state in the same statement
        (``StepLogs.flushing``) and halts the same way. Either way the state is read before the
        attempt commits, so a cancel committed after that read is seen at the next boundary (or
        by the release, which never overwrites it); folded, the read is no earlier than the
        SELECT's was, and on SQLite (``BEGIN IMMEDIATE``) no cancel commits between it and the
        attempt's commit."""
        deadline = self.row.deadline_at
        if deadline is not None and clock.now() >= deadline:
            logger.info("chrono_forge: %s passed its deadline; the pass stops here", self.row)
            self.past_deadline = True
            raise HaltExecution()
        ran = len(self.steps.attempted)
        if ran == self.checked_after:
            return False
        self.checked_after = ran
        if fold and self.steps.completing:
            return True
        if Workflow.objects.filter(pk=self.row.pk, state=STATE.cancelled).exists():
            logger.info("chrono_forge: %s was cancelled; the pass stops here", self.row)
            raise HaltExecution()
        return False

    def finish(self) -> None:
        try:
            try:
                if self.past_deadline:  # cancelled before the release, which then keeps it
                    self.steps.take_claim()
                    deadlines.cancel_run(self.row, clock.now(), context=self.context)
            finally:
                self.release(self.final_state)
        finally:
            self.publish()
            self.announce_outcome()

    # -- lock and release --------------------------------------------------------------------------
    def claim_lock(
        self, unchanged: QuerySet[Workflow], fields: dict[str, Any]
    ) -> LockClaimLost | None:
        """The deferred lock of a first pass, run by its first write (in that write's transaction,
        before it). If another delivery took the run meanwhile, returns the ``LockClaimLost`` the
        write raises instead: this pass exits without writing anything (and so does every later
        write it tries)."""
        if unchanged.update(**fields):
            self.announce(signals.workflow_started)  # sent when the lock's transaction commits
            return None
        self.released = True  # nothing of this run is ours to release
        self.continuation = None
        error = LockClaimLost(
            f"{self.job_class}({self.key}): another delivery started the run first; "
            f"run {self.run_id} exits"
        )
        self.steps.claim = lambda: error
        return error

    def release(self, state: str, **fields: Any) -> None:
        """Save the context (if changed) and release the lock in one UPDATE that verifies ownership.

        If saving the context fails, the lock is still released (without it) and the error
        propagates. If an external wake-up arrived meanwhile (``wake_requested``), an idle workflow
        gets an immediate continuation instead of waiting for its schedule or an event that already
        happened.

        The same UPDATE leaves an idle row scheduled (``next_run_at``: the continuation's due time,
        or the merge poll's) or parked (``parked_on``/``parked_since``: the event gate, since it
        first parked there); a terminal row has neither.
        """
        if self.released:
            return
        now = clock.now()
        due = None
        if state == STATE.idle:
            due = self.continuation[0] if self.continuation else self.expected_at
        parked = self.parked_on if state == STATE.idle and due is None else None
        since = None
        if parked:
            same_gate = self.row.parked_on == parked and self.row.parked_since is not None
            since = self.row.parked_since if same_gate else now
        fields.update(
            locked_by=None,
            locked_at=None,
            state=state,
            modified=now,
            next_run_at=due,
            parked_on=parked,
            parked_since=since,
        )
        # A cancel committed while this pass ran is never overwritten: the row is no longer ours
        # to set, only to unlock (see release_cancelled).
        owned = Workflow.objects.filter(pk=self.row.pk, locked_by=self.run_id).exclude(
            state=STATE.cancelled
        )
        try:
            if self.context.dirty:
                fields["context"] = self.context.to_dict()
            with self.steps.flushing():  # finished steps commit with the release
                updated = owned.filter(wake_requested=False).update(**fields)
                if not updated:
                    if state == STATE.idle:  # run now, keeping the continuation's arguments
                        self.continuation = (now, self.continuation[1] if self.continuation else {})
                        fields["next_run_at"] = now
                    updated = owned.update(wake_requested=False, **fields)
                if not updated and self.release_cancelled(fields, now):
                    return
        except RunCancelled:
            raise
        except Exception:
            fields.pop("context", None)
            with self.steps.flushing():
                if not owned.update(**fields):
                    self.release_cancelled(fields, now)
            self.released = True
            self.row.state = self.row.state if self.cancelled else state
            raise
        self.released = True
        if not updated:
            holder = (
                Workflow.objects.filter(pk=self.row.pk).values_list("locked_by", flat=True).first()
            )
            raise LongRunningConcurrentExecutionError(
                f"{self.job_class}({self.key}): run {self.run_id} lost its lock to {holder} "
                f"(it ran longer than MAX_DURATION={conf.max_duration()})"
            )
        self.context.dirty = False
        self.row.state = state

    def release_cancelled(self, fields: dict[str, Any], now: datetime) -> bool:
        """The release found the run cancelled under this pass's lock: clear the lock (and save
        the context) without touching the state, drop the continuation. Inside the final
        transaction of a completion or failure it raises RunCancelled instead, which rolls the
        marker back (``finish()`` releases again). False when the lock is not ours at all."""
        mine = Workflow.objects.filter(pk=self.row.pk, locked_by=self.run_id, state=STATE.cancelled)
        if self.finalizing:
            if mine.exists():
                raise RunCancelled()
            return False
        keep = {"locked_by": None, "locked_at": None, "modified": now}
        if "context" in fields:
            keep["context"] = fields["context"]
        if not mine.update(**keep):
            return False
        self.cancelled = True
        self.released = True
        self.continuation = None
        self.context.dirty = False
        self.row.state = STATE.cancelled
        logger.info("chrono_forge: %s was cancelled during pass %s", self.row, self.run_id)
        return True

    # -- continuation ------------------------------------------------------------------------------
    def continue_at(self, run_at: datetime, **internal: Any) -> datetime:
        """Schedule the next pass at ``run_at`` (returned); published after the lock is released."""
        self.continuation = (run_at, internal)
        return run_at

    def continue_after(self, delay: timedelta | float, **internal: Any) -> datetime:
        """Schedule the next pass ``delay`` from now; returns its due time."""
        return self.continue_at(clock.now() + conf.as_timedelta(delay), **internal)

    def expect_at(self, due: datetime) -> None:
        """Something outside the pass (the merge poller) wakes the run by ``due``: the release
        stores it as the row's due time, which the overdue sweep honours, and enqueues nothing."""
        self.expected_at = due

    def park(self, step_name: str) -> HaltExecution:
        """Park on an event with nothing scheduled; the release records ``step_name`` and since
        when, so the row says what it waits for."""
        self.parked_on = step_name
        return HaltExecution()

    def publish(self) -> None:
        if self.cancelled:  # released under a cancel: the on_cancel hook's turn, if any
            on_cancel.publish_after_cancelled_pass(self)
        if self.continuation is None or not self.released or self.row.state != STATE.idle:
            return
        run_at, internal = self.continuation
        dispatch.enqueue(
            self.job_class, self.key, run_at=run_at, token=token_for(run_at), **internal
        )

    # -- signals -----------------------------------------------------------------------------------
    def announce(self, signal: Signal, **kwargs: Any) -> None:
        """Send one of :mod:`chrono_forge.signals` for this run (after its write committed)."""
        signals.send(signal, self.workflow_class, using=self.db, workflow=self.row, **kwargs)

    def announce_outcome(self) -> None:
        """The run's committed final state, if it is one a signal reports."""
        if not self.released:
            return
        state, error = self.row.state, self.outcome_error
        if state == STATE.completed:
            self.announce(signals.workflow_completed)
        elif state == STATE.failed:
            self.announce(signals.workflow_failed, error=error)
        elif state == STATE.stalled:
            step_name = getattr(error, "step_name", None)
            self.announce(signals.workflow_stalled, error=error, step_name=step_name)

    def step_failed(self, step_name: str, error: BaseException, attempt: int) -> None:
        """A step's failure was committed: it is failed for good."""
        self.announce(signals.step_failed, step_name=step_name, error=error, attempt=attempt)

    # -- outcomes ----------------------------------------------------------------------------------
    def record_error(
        self, error: BaseException, *, step_name: str | None = None, attempt: int | None = None
    ) -> ErrorLog:
        telemetry.failure(self, step_name)
        self.steps.take_claim()  # the run's first write may be its error (perform() raised)
        return record_error(
            self.row.pk, error, step_name=step_name, attempt=attempt, context=self.context
        )

    @contextmanager
    def final_transaction(self) -> Iterator[None]:
        """A marker INSERT and the final release, committed together. If the block fails (e.g.
        saving the context), its rollback undid the release too: ``finish()`` releases again.
        A run cancelled meanwhile rolls back too (no marker on a cancelled run)."""
        self.finalizing = True
        carried = self.steps.pending()
        try:
            with transaction.atomic(using=self.db):
                yield
        except LongRunningConcurrentExecutionError:
            raise  # the lock is someone else's: nothing to release
        except LockClaimLost:
            raise  # another delivery runs it: nothing of this pass was written
        except Exception:  # RunCancelled too
            self.released = False
            # rolled back: a lock this block wrote and the completions it carried commit with
            # the release finish() runs
            self.steps.restore(carried)
            raise
        finally:
            self.finalizing = False

    def complete(self, result: Any = None) -> None:
        """The completion marker (born completed), the state change with ``perform()``'s result
        and the release: one transaction (rolled back if the run was cancelled meanwhile:
        ``finish()`` unlocks it)."""
        now = clock.now()
        try:
            with self.final_transaction():
                self.steps.create_completed(COMPLETION_MARKER, now)
                self.release(STATE.completed, completed_at=now, result=result)
        except RunCancelled:
            return
        self.row.result = result
        self.final_state = STATE.completed

    def exiting(self, error: BaseException, *, stalled: bool) -> None:
        """A step recorded ``error`` (its worker is going down) and lets it through; the release
        in ``finish()`` stalls the run or keeps the continuation the step scheduled."""
        self.exit_error = error
        if stalled:
            self.final_state = STATE.stalled
            self.outcome_error = error

    def stall(self, error: BaseException, *, recorded: bool) -> None:
        """A step used up its retries, or a programming error: the operator must retry."""
        if not recorded:
            self.record_error(error)
        self.final_state = STATE.stalled
        self.outcome_error = error

    def retry_or_fail(self, error: BaseException) -> None:
        """An uncaught error in perform(): retry the whole pass per the class policy, else fail."""
        attempt = self.delivery.attempt
        error_log = self.record_error(error, attempt=attempt)
        policy = self.workflow_class.workflow_retry_policy()
        counts = dict(self.delivery.retry_counts)

        def count(budget_key: str) -> int:
            counts[budget_key] = counts.get(budget_key, 0) + 1
            return counts[budget_key]

        backoff = policy.retry_backoff(error, attempts=attempt + 1, count=count)
        if policy.max_attempts is None and attempt + 1 >= WORKFLOW_ATTEMPTS_GUARD:
            backoff = None
        if backoff is not None:
            self.continue_after(backoff, attempt=attempt + 1, retry_counts=counts or None)
            return
        now = clock.now()
        try:
            with self.final_transaction():
                self.steps.create_completed(
                    step_names.failure_marker(error_log.pk),
                    now,
                    metadata={"error_log_id": json_pk(error_log.pk)},
                )
                self.release(STATE.failed)
        except RunCancelled:
            return  # cancelled meanwhile: the error stays in ErrorLog, the run stays cancelled
        self.outcome_error = error
        self.final_state = STATE.failed

    # -- policies ----------------------------------------------------------------------------------
    def step_policy(self, explicit: Any = None, *, where: str = "retry_policy") -> AnyRetryPolicy:
        """Per-call policy, else the class default, else the built-in step default. A per-call
        value that is not a policy is a programming error (InvalidStepArgument: it stalls)."""
        try:
            policy = coerce(explicit)
        except (TypeError, ValueError) as error:
            raise InvalidStepArgument(f"{where}: retry_policy: {error}") from None
        return policy or coerce(self.workflow_class.retry_policy) or RetryPolicy.step_default()

    def claim_step(self, step: str, *, advice: str | None = None) -> None:
        """Record that this pass used ``step``; a second use raises DuplicateStepName naming both
        call sites (the second call would otherwise silently return the first one's checkpoint)."""
        site = user_call_site()
        first = self.claimed_steps.get(step)
        if first is None:
            self.claimed_steps[step] = site
        else:
            advice = advice or (
                "Give each call its own name=... (step names must be unique within perform())"
            )
            raise DuplicateStepName(
                f"{step} is used twice in one pass: first at {first}, again at {site}. {advice}"
            )

    def new_step(self, step: str) -> Callable[[], None] | None:
        """Replay-divergence detection, called before a step is INSERTed: ``perform()`` starts
        ``step`` while completed (or failed) steps that earlier passes recorded are not replayed
        yet, so the code no longer reaches them in the order the run took. Returns the warning's
        write, committed with the step's INSERT (so once per workflow and step), or raises it with
        ``REPLAY_DIVERGENCE = "stall"``, before anything of the step is stored. Costs no statement
        when the replay matches."""
        if not self.replaying or not step_names.revisited_by_replay(step):
            return None
        settled = (COMPLETED, FAILED)
        behind = [
            name
            for name in self.unvisited_history()
            if (log := self.steps.get(name)) is not None and log.state in settled
        ]
        if not behind:
            return None
        shown = ", ".join(behind[:3]) + (f" and {len(behind) - 3} more" if len(behind) > 3 else "")
        error = ReplayDivergence(
            f"{step} started while {len(behind)} step(s) recorded by earlier passes were not "
            f"replayed: {shown}. perform() no longer reaches them in the order this run took them "
            "(a step inserted, removed or reordered under a run in flight?); put the change behind "
            "self.patched(...)",
            step_name=step,
        )

        def record() -> None:
            record_error(self.row.pk, error, step_name=step, context=self.context)

        if conf.replay_divergence() == "stall":
            record()
            error.recorded = True
            raise error
        return record

    def unvisited_history(self) -> list[str]:
        """The steps earlier passes recorded that this pass has not replayed yet (the replay
        frontier): empty once the pass went past everything the run did before. Answered from the
        pass's step view, without a statement."""
        return [
            name
            for name in self.steps.history()
            if name not in self.claimed_steps and step_names.revisited_by_replay(name)
        ]


class BlockedPass(Delivery):
    """A delivery for a workflow class this process cannot run (not registered): the row is stalled
    with ``error`` under the lock and token rules of a real pass, so a superseded continuation or a
    duplicate of a live run still exits quietly, and an operator retry finds an ordinary stalled
    workflow once the class is back."""

    def __init__(self, job_class: str, key: str, error: NotExecutableError, **internal: Any):
        super().__init__(None, key, job_class=job_class, **internal)
        self.error = error

    def execute(self) -> Workflow | None:
        if not Workflow.objects.filter(job_class=self.job_class, key=self.key).exists():
            logger.error(
                "chrono_forge: %s(%s) does not exist, and its class cannot run here: %s",
                self.job_class,
                self.key,
                self.error,
            )
            return None
        with telemetry.pass_span(self):
            run = self.acquired = self.acquire()
            if run is None:
                return None
            try:
                run.stall(self.error, recorded=False)
            finally:
                run.finish()
            return run.row


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_call_site() -> str:
    """``file:line`` of the innermost frame outside chrono_forge (the primitive's caller)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:  # called from chrono_forge itself only
        return "<chrono_forge>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
