"""Attempts per operator try, read back from what is stored.

An operator retry (``retry_now``/``retry_later``) resets each failed step to ``attempts=0`` and
writes a ``$workflow_retry$<unix seconds>`` marker, so a step's row only counts the attempts of its
current *try*. The earlier tries live on in ErrorLog: every failed attempt is recorded there once,
with its number (``attempt``) and its time. Within one try attempts count 1, 2, 3...; only an
operator retry starts again at 1. So, for one step:

* the tries that had a failure are its errors numbered 1 (``starts``);
* the attempts of finished tries are its recorded failures (``failed``), less those of the try the
  newest error belongs to (``last_attempt`` of them: attempts 1..N each failed once);
* the current try is a new one, with no failure yet, when the row's count went back below the
  newest error's number (a reset), or is at it again with an attempt started after that error.

The admin's workflow page, the Steps list and ``chrono_forge show`` all read this from
:func:`step_tries` (one query, only for steps that may have been retried) and number error cards
with :func:`number_errors`. A step never retried reads as before (one try). The policy's
``max_attempts`` is not stored, so the attempt numbers carry no "of N".

Polling kinds (``wait_until``, ``continue_if``, ...) count condition checks, not attempts: they are
left out (one try, as before).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from .models import ErrorLog, ExecutionLog
from .step_names import RETRY_MARKER_PREFIX, SEPARATOR, revisited_by_replay

__all__ = [
    "StepTries",
    "POLLING_KINDS",
    "retry_times",
    "may_be_retried",
    "step_tries",
    "tries_of",
]

#: Kinds whose ``attempts`` counts condition checks rather than attempts.
POLLING_KINDS = frozenset(
    {"wait_until", "continue_if", "merge", "durably_repeat", "branch", "receive"}
)

COMPLETED = ExecutionLog.STATE.completed
FAILED = ExecutionLog.STATE.failed


@dataclass(frozen=True)
class StepTries:
    """A step's attempts over its operator tries."""

    #: tries in all (1: never reset by an operator retry)
    tries: int
    #: attempts over every try
    attempts: int
    #: attempts of the current (last) try, the row's own ``attempts``
    current_attempts: int
    #: tries that recorded a failure (the newest error belongs to try number ``errored``)
    errored: int

    @property
    def retried(self) -> bool:
        return self.tries > 1

    def summary(self, word: str = "attempt") -> str:
        """``"5 attempts over 3 tries"``."""
        return f"{self.attempts} {word}{'' if self.attempts == 1 else 's'} over {self.tries} tries"

    def number_errors(self, errors: Sequence[ErrorLog]) -> dict[Any, int]:
        """Error pk -> try number, for the step's newest errors (any suffix of them, oldest
        first, as read): walking back from the newest, the try changes before each attempt 1."""
        numbers: dict[Any, int] = {}
        current = self.errored
        for error in reversed(errors):
            if error.attempt is None:
                continue
            numbers[error.pk] = max(current, 1)
            if error.attempt == 1:
                current -= 1
        return numbers


def retry_times(logs: Iterable[ExecutionLog]) -> dict[Any, datetime]:
    """Workflow id -> when its latest operator retry began, from retry markers among ``logs``."""
    latest: dict[Any, datetime] = {}
    for log in logs:
        if log.step_name.startswith(RETRY_MARKER_PREFIX) and log.started_at is not None:
            if log.workflow_id not in latest or log.started_at > latest[log.workflow_id]:
                latest[log.workflow_id] = log.started_at
    return latest


def may_be_retried(log: ExecutionLog, retried_at: datetime | None) -> bool:
    """Whether an operator retry may have reset ``log``: a step (not a marker, a repetition or a
    polling kind) that had started before the workflow's latest retry."""
    return (
        retried_at is not None
        and revisited_by_replay(log.step_name)
        and log.step_name.split(SEPARATOR, 1)[0] not in POLLING_KINDS
        and log.started_at is not None
        and log.started_at <= retried_at
    )


def _count(errors) -> Coalesce:
    counted = errors.order_by().values("workflow_id").annotate(n=Count("pk")).values("n")[:1]
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def step_tries(
    logs: Iterable[ExecutionLog], retried_at: dict[Any, datetime]
) -> dict[Any, StepTries]:
    """Step log pk -> :class:`StepTries` for each of ``logs`` an operator retry may have reset
    (:func:`may_be_retried`, from ``retried_at``: :func:`retry_times`); the rest read as one try.

    One query (none when no step qualifies): the candidate rows, each with four correlated
    subqueries over its own errors (recorded failures, tries with a failure, the newest error's
    number and time), so the result has one row per candidate, whatever the number of errors.
    """
    candidates = {
        log.pk: log for log in logs if may_be_retried(log, retried_at.get(log.workflow_id))
    }
    if not candidates:
        return {}
    errors = ErrorLog.objects.filter(
        workflow_id=OuterRef("workflow_id"),
        step_name=OuterRef("step_name"),
        attempt__isnull=False,
    )
    newest = errors.order_by("-created", "-pk")
    rows = (
        ExecutionLog.objects.filter(pk__in=list(candidates))
        .annotate(
            failed=_count(errors),
            starts=_count(errors.filter(attempt=1)),
            last_attempt=Subquery(newest.values("attempt")[:1]),
            last_at=Subquery(newest.values("created")[:1]),
        )
        .values_list("pk", "failed", "starts", "last_attempt", "last_at")
    )
    result: dict[Any, StepTries] = {}
    for pk, failed, starts, last_attempt, last_at in rows:
        tries = _tries(candidates[pk], failed, starts, last_attempt, last_at)
        if tries is not None:
            result[pk] = tries
    return result


def tries_of(logs: Sequence[ExecutionLog]) -> dict[Any, StepTries]:
    """:func:`step_tries` for step logs of any workflows whose retry markers were not read with
    them (a page of the Steps list): one query for those markers, then :func:`step_tries`."""
    workflow_ids = {log.workflow_id for log in logs if revisited_by_replay(log.step_name)}
    if not workflow_ids:
        return {}
    markers = ExecutionLog.objects.filter(
        workflow_id__in=workflow_ids, step_name__prefix=RETRY_MARKER_PREFIX
    ).only("id", "workflow_id", "step_name", "started_at")
    return step_tries(logs, retry_times(markers))


def _tries(
    log: ExecutionLog,
    failed: int,
    starts: int,
    last_attempt: int | None,
    last_at: datetime | None,
) -> StepTries | None:
    if not starts or last_attempt is None:
        return None  # no failure recorded, or none of a first attempt: nothing to split in tries
    attempts = log.attempts
    if log.state == FAILED:
        new = attempts < last_attempt
    elif log.state == COMPLETED:
        new = attempts <= last_attempt  # the successful attempt is never the newest error's
    else:  # pending: reset and not run yet, running a fresh try, or waiting for a retry
        new = attempts < last_attempt or (
            attempts == last_attempt
            and log.last_executed_at is not None
            and last_at is not None
            and log.last_executed_at > last_at
        )
    if new:
        tries, total = starts + 1, failed + attempts
    else:  # the current try is the newest error's: its attempts 1..last_attempt failed
        tries, total = starts, failed - last_attempt + attempts
    if tries <= 1:
        return None
    return StepTries(
        tries=tries, attempts=max(total, attempts), current_attempts=attempts, errored=starts
    )
