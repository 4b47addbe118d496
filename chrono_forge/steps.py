"""Shared helpers of the primitives: the per-pass step-log view and method resolution."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from django.db import connections, transaction

from . import clock, conf, signals
from .errors import error_class_name, error_text, storable_message
from .exceptions import (
    ExecutionFailedError,
    HaltExecution,
    InvalidStepArgument,
    StepAttemptLost,
    StepTimeout,
    WaitConditionNotMet,
)
from .models import ExecutionLog, Workflow

# Repetition logs (``durably_repeat$<name>$<unix_ts>``) grow without bound and are never replayed,
# so they stay out of the per-pass read. Re-exported here for the modules that import it from steps.
from .step_names import REPETITION_LOG_PATTERN  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from .executor import Pass
    from .retry import AnyRetryPolicy
    from .workflow import DurableWorkflow

logger = logging.getLogger("chrono_forge")

#: Columns a pass needs from a step log (error text and timestamps stay in the database).
STEP_COLUMNS = (
    "id",
    "workflow_id",
    "step_name",
    "state",
    "attempts",
    "started_at",
    "last_executed_at",  # when the latest attempt started (a step timeout's durable check)
    "result",
    "metadata",
)

COMPLETED = ExecutionLog.STATE.completed
PENDING = ExecutionLog.STATE.pending
FAILED = ExecutionLog.STATE.failed

#: Step metadata: the message of the ExecutionFailedError a failed step raised (its replays raise
#: it again), and ``result`` of a wait_until that timed out.
FAILURE = "failure"
TIMED_OUT = "timed_out"
#: Step metadata: the last attempt whose failure was recorded. A pending step whose ``attempts`` is
#: not it has an attempt that started and never finished (its worker died).
FAILED_ATTEMPT = "failed_attempt"

#: What the pass's next write carries (:meth:`StepLogs.pending`): the lock still to be written, and
#: the finished steps' completions (step log id, columns).
Pending = tuple[Callable[[], BaseException | None] | None, list[tuple[Any, dict[str, Any]]]]


class StepLogs:
    """The execution logs of one workflow as seen by one pass.

    One bulk SELECT (on first use) answers every lookup of the pass, so replaying N completed steps
    costs nothing per step. A workflow on its very first pass is known to have no logs and skips
    even that read. Rows written during the pass are added to the view.
    """

    def __init__(
        self,
        workflow_id: int,
        *,
        known_empty: bool = False,
        before_attempt: Callable[[], bool] | None = None,
        on_new_step: Callable[[str], Callable[[], Any] | None] | None = None,
    ):
        self.workflow_id = workflow_id
        #: called before each attempt is recorded (the pass's cancellation boundary); may halt, or
        #: return True to have the attempt's write check the run is not cancelled (see flushing)
        self.before_attempt = before_attempt
        #: called with the name of every step about to be INSERTed; may raise (nothing is stored)
        #: or return a write to commit together with the INSERT (a divergence warning)
        self.on_new_step = on_new_step
        self._by_name: dict[str, ExecutionLog] | None = {} if known_empty else None
        self._deferred: list[tuple[Any, dict[str, Any]]] = []
        #: the pass's lock while it is still to be written (a first pass, see
        #: Delivery.acquire_delivered): the pass's first write runs it first, in its own transaction
        #: (it returns None, or the error to raise when another delivery took the run first)
        self.claim: Callable[[], BaseException | None] | None = None
        #: steps whose attempt this pass recorded (theirs is not a lost attempt)
        self.attempted: set[str] = set()
        #: steps this pass INSERTed (a view loaded after them includes them; they are not history)
        self.created: set[str] = set()

    def _rows(self) -> dict[str, ExecutionLog]:
        if self._by_name is None:
            rows = (
                ExecutionLog.objects.filter(workflow_id=self.workflow_id)
                .exclude(step_name__regex=REPETITION_LOG_PATTERN)
                .only(*STEP_COLUMNS)
            )
            self._by_name = {row.step_name: row for row in rows}
        return self._by_name

    def get(self, step_name: str) -> ExecutionLog | None:
        return self._rows().get(step_name)

    def names(self) -> list[str]:
        return list(self._rows())

    def history(self) -> list[str]:
        """The step names earlier passes recorded (the view minus what this pass INSERTed)."""
        return [name for name in self._rows() if name not in self.created]

    def create(
        self, step_name: str, *, unless_cancelled: bool = False, **fields: Any
    ) -> ExecutionLog:
        """INSERT a step log (the first attempt is recorded in the INSERT itself); for
        ``unless_cancelled`` see :meth:`flushing`."""
        now = clock.now()
        storable_error(fields)
        along = self.on_new_step(step_name) if self.on_new_step is not None else None
        together = (
            transaction.atomic(using=conf.database(), savepoint=False) if along else nullcontext()
        )
        with self.flushing(unless_cancelled=unless_cancelled), together:
            if along:
                along()
            log = insert_step(
                ExecutionLog(
                    workflow_id=self.workflow_id,
                    step_name=step_name,
                    created=now,
                    modified=now,
                    **fields,
                )
            )
        self.created.add(step_name)
        if self._by_name is not None:  # not loaded yet: a later read will include this row anyway
            self._by_name[step_name] = log
        return log

    def create_completed(self, step_name: str, now: datetime, **fields: Any) -> ExecutionLog:
        """INSERT a step born completed at ``now`` (a marker, or a step resolved on first sight):
        one attempt that started, ran and completed in the same statement."""
        return self.create(
            step_name,
            state=COMPLETED,
            attempts=1,
            started_at=now,
            last_executed_at=now,
            completed_at=now,
            **fields,
        )

    def update(self, log: ExecutionLog, *, unless_cancelled: bool = False, **fields: Any) -> None:
        """UPDATE only the given columns (plus ``modified``) and mirror them on ``log``; for
        ``unless_cancelled`` see :meth:`flushing`."""
        fields["modified"] = clock.now()
        storable_error(fields)
        with self.flushing(unless_cancelled=unless_cancelled):
            ExecutionLog.objects.filter(pk=log.pk).update(**fields)
        for name, value in fields.items():
            setattr(log, name, value)

    def record_attempt(
        self, step_name: str, log: ExecutionLog | None, **fields: Any
    ) -> ExecutionLog:
        """One statement per attempt: the first is recorded in the INSERT (``attempts=1``), later
        ones bump ``attempts`` in an UPDATE that also writes whichever of ``fields`` changed. The
        pass's boundary runs first: it may halt, or fold its cancellation check into the write."""
        live = self.before_attempt() if self.before_attempt is not None else False
        now = clock.now()
        self.attempted.add(step_name)  # before the write: if it fails, the next boundary checks
        if log is None:
            log = self.create(
                step_name,
                unless_cancelled=live,
                attempts=1,
                started_at=now,
                last_executed_at=now,
                **fields,
            )
        else:
            changed = {name: value for name, value in fields.items() if getattr(log, name) != value}
            self.update(
                log,
                unless_cancelled=live,
                attempts=log.attempts + 1,
                last_executed_at=now,
                **changed,
            )
        return log

    def complete_later(self, log: ExecutionLog, **fields: Any) -> None:
        """Record a finished step now (in this pass's view) and write it with the pass's next write.

        The UPDATE rides in the same transaction as the next step's INSERT, a wait's write or the
        release, saving one commit per step. It is still committed before anything else the pass
        does is, and a hard kill before it re-runs the step: at-least-once, as always.
        """
        fields["modified"] = clock.now()
        for name, value in fields.items():
            setattr(log, name, value)
        self._deferred.append((log.pk, fields))

    def pending(self) -> Pending:
        """What the pass's next write carries, for :meth:`restore` if the write rolls back."""
        return self.claim, list(self._deferred)

    def restore(self, pending: Pending) -> None:
        """A write that carried ``pending`` rolled back: the next write carries it again."""
        self.claim, self._deferred[:] = pending

    @property
    def completing(self) -> bool:
        """Whether a finished step's completion is still to be written (with the next write)."""
        return bool(self._deferred)

    @contextmanager
    def flushing(self, *, unless_cancelled: bool = False) -> Iterator[None]:
        """Run a write in one transaction with the deferred step completions (if any), and with
        the pass's lock when it is still to be written (it goes first).

        ``unless_cancelled`` (the write of an attempt whose body follows a finished step, which
        :attr:`completing` says): the cancellation check rides in that step's completion UPDATE,
        the write's first statement, conditional on the run not being cancelled. When it was,
        nothing is written (the completions stay deferred: they commit with the release) and
        HaltExecution is raised once the empty transaction ended, so the body never starts."""
        if not self._deferred and self.claim is None:
            yield
            return
        carried = self.pending()
        claim, self.claim = self.claim, None
        lost = None
        cancelled = False
        try:
            with transaction.atomic(using=conf.database(), savepoint=False):
                lost = claim() if claim is not None else None
                if lost is None:
                    cancelled = not self.flush(unless_cancelled=unless_cancelled)
                    if not cancelled:
                        yield
        except BaseException:
            self.restore(carried)  # rolled back: the next write takes the lock, writes them again
            raise
        # raised once the (empty) transaction ended, so nothing is poisoned
        if lost is not None:
            raise lost
        if cancelled:
            logger.info(
                "chrono_forge: workflow %s was cancelled; the pass stops here", self.workflow_id
            )
            raise HaltExecution()

    def take_claim(self) -> None:
        """Write the pass's lock now if it is still to be written (before a write that does not
        go through :meth:`flushing`)."""
        if self.claim is not None:
            with self.flushing():
                pass

    def flush(self, *, unless_cancelled: bool = False) -> bool:
        """Write the deferred step completions (inside the caller's transaction). With
        ``unless_cancelled`` the first one's UPDATE also checks, in the same statement, that the
        run is not cancelled; returns False when it is (nothing written, nothing taken off)."""
        if unless_cancelled and self._deferred:
            pk, fields = self._deferred[0]
            # no row matched: cancelled, or (never in a pass) the step log is gone: ask which
            if not update_step(pk, fields, unless_cancelled=self.workflow_id) and (
                Workflow.objects.filter(
                    pk=self.workflow_id, state=Workflow.STATE.cancelled
                ).exists()
            ):
                return False
            self._deferred.pop(0)
        while self._deferred:
            pk, fields = self._deferred.pop(0)
            update_step(pk, fields)
        return True


# -- A step's two writes (its INSERT, its completion UPDATE), from SQL written once --
# They are a pass's statements per step. The ORM would build and compile the same query every
# time (its Python was most of a step's CPU: the ``NOT EXISTS`` subquery alone more than the rest),
# so the SQL is written once (per column set), and the values go through the same fields'
# conversions the ORM applies (``pre_save``, ``get_db_prep_save``). The statements run on Django's
# cursor, so query counting and execute wrappers see them like any other. Neither sends model
# signals (the ORM's ``update()`` sends none either; chrono_forge connects none to step logs).


def insert_step(log: ExecutionLog) -> ExecutionLog:
    """INSERT the new step log ``log`` as ``log.save()`` would (every column; an auto-incremented
    primary key is read back into ``log``), and return it."""
    alias = conf.database()
    connection = connections[alias]
    auto: Any = ExecutionLog._meta.auto_field  # None with a UUID key (set in Python, written)
    params = [
        field.get_db_prep_save(field.pre_save(log, True), connection) for field in _insert_fields()
    ]
    sql, returning = _insert_sql(alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if auto is not None:
            if returning:
                pk = cursor.fetchone()[0]
            else:
                pk = connection.ops.last_insert_id(cursor, ExecutionLog._meta.db_table, auto.column)
            setattr(log, auto.attname, pk)
    log._state.adding = False
    log._state.db = alias
    return log


def _insert_fields() -> list[Any]:
    """The columns an INSERT writes: all but an auto-incremented primary key."""
    meta = ExecutionLog._meta
    return [field for field in meta.local_concrete_fields if field is not meta.auto_field]


@functools.cache
def _insert_sql(alias: str) -> tuple[str, bool]:
    """The INSERT of a step log and whether it returns the new primary key (``RETURNING``)."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    auto: Any = ExecutionLog._meta.auto_field
    fields = _insert_fields()
    sql = (
        f"INSERT INTO {quote(ExecutionLog._meta.db_table)}"
        f" ({', '.join(quote(field.column) for field in fields)})"
        f" VALUES ({', '.join('%s' for _ in fields)})"
    )
    returning = auto is not None and connection.features.can_return_columns_from_insert
    if returning:
        sql += f" RETURNING {quote(auto.column)}"
    return sql, returning


def update_step(pk: Any, fields: dict[str, Any], *, unless_cancelled: Any = None) -> int:
    """``ExecutionLog.objects.filter(pk=pk).update(**fields)``, returning the rows matched (0 or 1).

    With ``unless_cancelled`` (a workflow id), only when that workflow is not cancelled: the check
    rides in the same statement (``NOT EXISTS``)."""
    alias = conf.database()
    connection = connections[alias]
    params = [
        _field(ExecutionLog, name).get_db_prep_save(value, connection)
        for name, value in fields.items()
    ]
    params.append(_field(ExecutionLog, "id").get_db_prep_value(pk, connection))
    if unless_cancelled is not None:
        params += [
            _field(Workflow, "id").get_db_prep_value(unless_cancelled, connection),
            Workflow.STATE.cancelled,
        ]
    sql = _update_sql(alias, tuple(fields), unless_cancelled is not None)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _field(model: Any, name: str) -> Any:
    return model._meta.get_field(name)


def _column(model: Any, name: str) -> str:
    return _field(model, name).column


@functools.cache
def _update_sql(alias: str, names: tuple[str, ...], unless_cancelled: bool) -> str:
    quote = connections[alias].ops.quote_name
    columns = ", ".join(f"{quote(_column(ExecutionLog, name))} = %s" for name in names)
    sql = (
        f"UPDATE {quote(ExecutionLog._meta.db_table)} SET {columns}"
        f" WHERE {quote(_column(ExecutionLog, 'id'))} = %s"
    )
    if unless_cancelled:
        sql += (
            f" AND NOT EXISTS (SELECT 1 FROM {quote(Workflow._meta.db_table)}"
            f" WHERE {quote(_column(Workflow, 'id'))} = %s"
            f" AND {quote(_column(Workflow, 'state'))} = %s)"
        )
    return sql


def storable_error(fields: dict[str, Any]) -> None:
    """A step's error message is stored the way ErrorLog stores it (NUL and lone surrogates
    replaced, truncated to ERROR_MESSAGE_MAX_CHARS): recording a failure must never fail."""
    if fields.get("error_message"):
        fields["error_message"] = storable_message(fields["error_message"])
    metadata = fields.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get(FAILURE), str):
        # the failure a replay raises is JSON: PostgreSQL's jsonb rejects NUL and lone surrogates
        fields["metadata"] = {**metadata, FAILURE: storable_message(metadata[FAILURE])}


def resolve_method(
    workflow: DurableWorkflow, method: Any, *, kind: str
) -> tuple[Callable[..., Any], str]:
    """A method name or a bound method of ``workflow`` -> (callable, name)."""
    if isinstance(method, str):
        func = getattr(workflow, method, None)
        if not callable(func):
            raise InvalidStepArgument(f"{kind}: {type(workflow).__name__} has no method {method!r}")
        return func, method
    if callable(method) and getattr(method, "__self__", None) is workflow:
        return method, method.__name__
    raise InvalidStepArgument(
        f"{kind}: expected a method name or a bound method of this workflow, got {method!r}"
    )


def callsite(kind: str, method: Any, name: str | None) -> str:
    """How a bad-argument error names the step: ``<kind>$<name or method name>`` as best known."""
    label = name
    if label is None:
        label = method if isinstance(method, str) else getattr(method, "__name__", None)
    return f"{kind}${label}" if isinstance(label, str) else kind


def duration_arg(
    value: Any, *, where: str, what: str, positive: bool = False, non_negative: bool = False
) -> timedelta:
    """A primitive's duration argument (timedelta or seconds), or InvalidStepArgument naming it."""
    try:
        delta = conf.as_duration(value)
    except TypeError:
        raise InvalidStepArgument(
            f"{where}: {what} must be a timedelta or a number of seconds, got {value!r}"
        ) from None
    except ValueError as error:  # NaN, infinite, or beyond what the clock can add
        raise InvalidStepArgument(f"{where}: {what} {error}") from None
    if positive and delta <= timedelta(0):
        raise InvalidStepArgument(f"{where}: {what} must be greater than 0, got {value!r}")
    if non_negative and delta < timedelta(0):
        raise InvalidStepArgument(f"{where}: {what} must not be negative, got {value!r}")
    return delta


def begin_attempt(
    run: Pass,
    step: str,
    log: ExecutionLog | None,
    policy: AnyRetryPolicy,
    *,
    timeout: timedelta | None = None,
    **fields: Any,
) -> ExecutionLog:
    """Everything a step does before its body runs, given its log (not completed) from this pass's
    view: replay a recorded failure, charge an attempt a dead worker never finished to ``policy``
    (``StepTimeout`` when it started longer than ``timeout`` ago; halting for a retry, or raising
    the step's failure), then record this attempt."""
    if log is not None and log.state == FAILED:  # perform() caught the failure and went on
        replay_failure(log)
    if log is not None and attempt_lost(run, log):
        lost = overdue_attempt(log, timeout) or lost_attempt(log)
        raise halt_or_fail(run, lost, record_failure(run, log, lost, policy))
    return run.steps.record_attempt(step, log, **fields)


def attempt_lost(run: Pass, log: ExecutionLog | None) -> bool:
    """The attempt ``log`` counts started and never finished: its worker died in it (killed, out of
    memory, timed out, exited). A finished attempt is completed, or its failure was recorded
    (:func:`record_failure` marks it), or it belongs to this pass."""
    return (
        log is not None
        and log.state == PENDING
        and log.attempts > 0
        and (log.metadata or {}).get(FAILED_ATTEMPT) != log.attempts
        and log.step_name not in run.steps.attempted
    )


def lost_attempt(log: ExecutionLog, exit_error: BaseException | None = None) -> StepAttemptLost:
    if exit_error is None:
        cause = (
            "it started and never finished: the process was killed, ran out of memory, "
            "timed out or exited"
        )
    else:
        cause = f"{error_class_name(exit_error)}: {exit_error}".rstrip(": ")
    return StepAttemptLost(
        f"worker died during attempt {log.attempts} ({cause})",
        step_name=log.step_name,
        attempt=log.attempts,
    )


def overdue_attempt(log: ExecutionLog, timeout: timedelta | None) -> StepTimeout | None:
    """The unfinished attempt of ``log`` as a StepTimeout when it started longer than ``timeout``
    ago (its worker died or hung in it, and the reaper handed this pass the lock), else None."""
    started = log.last_executed_at
    if timeout is None or started is None or clock.now() - started <= timeout:
        return None
    seconds = timeout.total_seconds()
    return StepTimeout(
        f"{log.step_name}: attempt {log.attempts} ran past its timeout of {seconds:g} s "
        f"(found unfinished by a later pass; it started at {started.isoformat()})",
        step_name=log.step_name,
        attempt=log.attempts,
        timeout=seconds,
    )


def record_failure(
    run: Pass,
    log: ExecutionLog,
    error: BaseException,
    policy: AnyRetryPolicy,
    *,
    message: str | None = None,
) -> ExecutionFailedError | None:
    """Attempt ``log.attempts`` failed with ``error``: record it in ErrorLog and charge it to
    ``policy``. Returns None when a retry is due (the continuation is scheduled), else the
    ExecutionFailedError of the now failed step.

    A worker going down (``SystemExit``, ``KeyboardInterrupt``, ...) is charged as a lost attempt.
    The ErrorLog row and the step's UPDATE (retry counts, the attempt marked finished, the failed
    state and the failure it replays) commit together: the failure path costs 2 statements and 1
    commit, and an attempt is never both recorded and later counted as lost.
    """
    charged = error if isinstance(error, Exception) else lost_attempt(log, error)
    metadata = dict(log.metadata or {})
    counts = dict(metadata.get("retry_counts") or {})

    def count(budget_key: str) -> int:
        counts[budget_key] = counts.get(budget_key, 0) + 1
        return counts[budget_key]

    backoff = policy.retry_backoff(charged, attempts=log.attempts, count=count)
    if counts:
        metadata["retry_counts"] = counts
    metadata[FAILED_ATTEMPT] = log.attempts
    fields: dict[str, Any] = {}
    failure = None
    if backoff is None:
        failure = ExecutionFailedError(
            message
            or f"{log.step_name} failed after {log.attempts} attempt(s): {error_text(charged)}",
            step_name=log.step_name,
            recorded=True,
        )
        failure.__cause__ = error
        metadata[FAILURE] = str(failure)
        fields = {
            "state": FAILED,
            "error_class": error_class_name(charged),
            "error_message": error_text(charged),
        }
    with transaction.atomic(using=run.db):
        run.record_error(error, step_name=log.step_name, attempt=log.attempts)
        run.steps.update(log, metadata=metadata, **fields)
    if backoff is not None:
        retry_at = run.continue_after(backoff)
        run.announce(
            signals.step_retry_scheduled,
            step_name=log.step_name,
            error=charged,
            attempt=log.attempts,
            retry_at=retry_at,
        )
    else:
        run.step_failed(log.step_name, charged, log.attempts)
    return failure


def halt_or_fail(
    run: Pass, error: BaseException, failure: ExecutionFailedError | None, *, stalls: bool = True
) -> BaseException:
    """What a step raises once :func:`record_failure` recorded ``error``: HaltExecution for a due
    retry, else the step's failure. A worker going down re-raises its own exception, so the
    process exits as asked, leaving the run scheduled (the retry, or at once when the failure does
    not stall the workflow) or stalled: never idle with nothing scheduled."""
    if not isinstance(error, Exception):
        if failure is not None and not stalls:
            run.continue_after(0)
        run.exiting(error, stalled=failure is not None and stalls)
        return error
    return HaltExecution() if failure is None else failure


def retry_or_stall(
    run: Pass,
    log: ExecutionLog,
    error: BaseException,
    policy: AnyRetryPolicy,
    *,
    message: str | None = None,
) -> NoReturn:
    """A step's body or condition raised: record the error, then either schedule a retry per
    ``policy`` and halt the pass, or mark the step failed and raise ExecutionFailedError
    (stalled). A worker going down gets its own exception back (see :func:`halt_or_fail`)."""
    raise halt_or_fail(run, error, record_failure(run, log, error, policy, message=message))


def replay_failure(log: ExecutionLog) -> NoReturn:
    """A failed step (its ``perform()`` caught the failure and went on) raises the same failure on
    every later pass, without running its body again, until an operator retry resets it."""
    metadata = log.metadata or {}
    message = metadata.get(FAILURE) or f"{log.step_name} failed after {log.attempts} attempt(s)"
    cls = WaitConditionNotMet if metadata.get("result") == TIMED_OUT else ExecutionFailedError
    raise cls(message, step_name=log.step_name, recorded=True)
