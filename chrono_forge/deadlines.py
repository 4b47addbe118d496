"""Workflow deadlines: a run still unfinished at its ``deadline_at`` is cancelled.

The due time is stored on the row (``Workflow.deadline_at``), set by the first pass in the UPDATE
that takes the lock: ``DurableWorkflow.deadline`` or ``options={"deadline": seconds}`` counted from
then, else the parent's ``deadline_at`` (a branch child inherits it at spawn). Three places enforce
it, so no run outlives its deadline by more than one sweep:

* the overdue sweep (``resume-overdue``) cancels every unfinished row past its due time, whatever
  it waits on (an event, a merge, a timer, an operator): :func:`cancel_past_deadline`;
* a pass that starts past the due time cancels the run instead of running it (:func:`cancel_run`,
  under the pass's lock SELECT);
* a pass that is running when the due time passes stops at its next primitive boundary (the
  cancellation check) and cancels the run when it releases.

Each records the reason ``deadline exceeded`` and a ``DeadlineExceeded`` in ErrorLog; descendants
are cancelled as ``cancel`` cancels them (reason ``parent cancelled: deadline exceeded``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction

from . import cancellation, conf
from .cancellation import cancel_rows
from .errors import error_class_name, record_error, storable_message
from .exceptions import DeadlineExceeded
from .models import ErrorLog, Workflow

if TYPE_CHECKING:  # pragma: no cover
    from .workflow import DurableWorkflow

logger = logging.getLogger("chrono_forge")

#: The cancel reason of a run cancelled by its deadline.
DEADLINE_REASON = "deadline exceeded"


def own_deadline(
    workflow_class: type[DurableWorkflow] | None, options: Mapping[str, Any]
) -> timedelta | None:
    """The run's own deadline: ``options["deadline"]`` (seconds, validated when stored; None
    means no deadline of its own), else the class's ``deadline``. None: the run keeps the
    ``deadline_at`` it was born with (a branch child's is its parent's)."""
    if "deadline" in options:
        seconds = options["deadline"]
        return None if seconds is None else timedelta(seconds=seconds)
    return getattr(workflow_class, "deadline", None) if workflow_class is not None else None


def error(row: Workflow) -> DeadlineExceeded:
    due = row.deadline_at.isoformat() if row.deadline_at else "?"
    return DeadlineExceeded(f"{row} was unfinished at its deadline ({due}); it was cancelled")


def cancel_run(
    row: Workflow,
    now: datetime,
    *,
    context: Mapping[str, Any] | None = None,
    unlock: bool = False,
) -> bool:
    """Cancel one run past its deadline (and its descendants) and record the DeadlineExceeded,
    together; False when it was no longer unfinished (cancelled or completed meanwhile). With
    ``unlock`` (a pass that found a stale lock of a dead worker on the row) the lock is cleared
    too, as the pass would have taken it."""
    with transaction.atomic(using=conf.database()):
        own, _ = cancel_rows(
            Workflow.objects.filter(pk=row.pk).cancellable(), DEADLINE_REASON, now, limit=1
        )
        if own:
            record_error(row.pk, error(row), context=context)
            if unlock:
                Workflow.objects.filter(pk=row.pk).update(locked_by=None, locked_at=None)
    if own:
        logger.info("chrono_forge: %s passed its deadline %s; cancelled", row, row.deadline_at)
    return bool(own)


def cancel_past_deadline(queryset, now: datetime) -> int:
    """Cancel the :meth:`~chrono_forge.models.WorkflowQuerySet.past_deadline` rows of
    ``queryset``; returns how many of them were cancelled (descendants not counted).

    Keyset batches of ``CANCEL_BATCH_SIZE`` primary keys, each one transaction: a SELECT of the
    ids (served by the ``chrono_forge_wf_deadline`` index), ``cancel_rows`` (its SELECT, UPDATE
    and children SELECT), then one SELECT of the rows it cancelled and one bulk INSERT of their
    ErrorLog entries. A crash rolls the batch back whole (no run cancelled without its entry):
    the next sweep does it again. The entries carry no context snapshot (a sweep does not load
    up to a batch of contexts)."""
    size = cancellation.CANCEL_BATCH_SIZE
    ids = queryset.past_deadline(now).order_by("pk").values_list("pk", flat=True)
    count = 0
    last = None
    while True:
        batch = list((ids if last is None else ids.filter(pk__gt=last))[:size])
        if not batch:
            break
        last = batch[-1]
        with transaction.atomic(using=conf.database()):
            own, _ = cancel_rows(
                Workflow.objects.filter(pk__in=batch).past_deadline(now),
                DEADLINE_REASON,
                now,
                limit=len(batch),  # no SELECT to find the batch ended
            )
            if own:
                _record(batch, now)
        count += own
        if len(batch) < size:
            break
    if count:
        logger.info("chrono_forge: cancelled %d workflow(s) past their deadline", count)
    return count


def _record(batch: list[Any], now: datetime) -> None:
    """One ErrorLog row per run of ``batch`` that this sweep just cancelled."""
    cancelled = Workflow.objects.filter(
        pk__in=batch,
        state=Workflow.STATE.cancelled,
        cancelled_at=now,
        cancel_reason=DEADLINE_REASON,
    ).only("id", "job_class", "key", "deadline_at")
    entries = []
    for row in cancelled:
        exc = error(row)
        entries.append(
            ErrorLog(
                workflow_id=row.pk,
                error_class=error_class_name(exc),
                error_message=storable_message(exc),
                created=now,
                modified=now,
            )
        )
    ErrorLog.objects.bulk_create(entries)
