"""Cancelling runs: the keyset-batched UPDATE of a queryset's unfinished rows and, recursively,
their branch children, with what the engine adds to it (the ``on_cancel`` hooks of the rows whose
class defines one are scheduled in the same UPDATE and enqueued per batch, and
``workflow_cancelled`` is sent for each row).

``Workflow.cancel``, ``WorkflowQuerySet.cancel`` and ``DurableWorkflow.cancel`` call into here, as
do the deadline sweep (:mod:`chrono_forge.deadlines`) and the operator actions
(:mod:`chrono_forge.operations`).
"""

from __future__ import annotations

from datetime import datetime

from . import clock, conf, on_cancel, registry, signals
from .exceptions import WorkflowNotCancellableError
from .models import Workflow
from .validation import validate_reason

#: Rows a cancellation reads and updates per statement.
CANCEL_BATCH_SIZE = 1000


def cancel_queryset(queryset, reason: str = "") -> int:
    """Cancel every unfinished row of ``queryset`` and their descendants (see
    :meth:`chrono_forge.models.WorkflowQuerySet.cancel`); returns how many rows were cancelled."""
    reason = validate_reason(reason)
    return cancel_rows(queryset.cancellable(), reason, clock.now())[1]


def cancel_rows(
    queryset, reason: str, now: datetime, *, limit: int | None = None, child_reason: str = ""
):
    """Cancel the rows of ``queryset`` (at most ``limit``), then their descendants, batch by
    batch; descendants get ``child_reason`` (default: ``parent cancelled: <reason>``). Returns
    ``(rows of queryset cancelled, rows cancelled in all)``; the caller validated ``reason``."""
    fields = {
        "state": Workflow.STATE.cancelled,
        "cancelled_at": now,
        "cancel_reason": reason,
        "next_run_at": None,
        "parked_on": None,
        "parked_since": None,
        "wake_requested": False,
        "modified": now,
    }
    if not child_reason:
        child_reason = f"parent cancelled: {reason}" if reason else "parent cancelled"
        child_reason = child_reason[: Workflow._meta.get_field("cancel_reason").max_length]
    # Rows of classes with an on_cancel hook are scheduled for it in the same UPDATE, and their
    # hook deliveries go in one bulk enqueue per batch; without such classes nothing changes.
    hooked = on_cancel.hook_classes()
    hooked_set = set(hooked)
    if hooked:
        fields.update(on_cancel.schedule_fields(hooked, now))
        ids = queryset.order_by("pk").values_list("pk", "job_class", "key")
    else:
        ids = queryset.order_by("pk").values_list("pk", flat=True)
    own = total = 0
    last = None
    while True:
        size = CANCEL_BATCH_SIZE if limit is None else min(CANCEL_BATCH_SIZE, limit - own)
        if size <= 0:
            break
        rows = list((ids if last is None else ids.filter(pk__gt=last))[:size])
        if not rows:
            break
        batch = [row[0] for row in rows] if hooked else rows
        last = batch[-1]
        done = Workflow.objects.filter(pk__in=batch).cancellable().update(**fields)
        own += done
        total += done
        if done and hooked:
            runs = [(job_class, key) for _pk, job_class, key in rows if job_class in hooked_set]
            on_cancel.enqueue_batch(runs, now)
        if done and signals.workflow_cancelled.has_listeners():
            announce_cancelled(Workflow.objects.filter(pk__in=batch, cancelled_at=now))
        children = Workflow.objects.filter(parent_execution_log__workflow_id__in=batch)
        total += cancel_rows(children.cancellable(), child_reason, now, child_reason=child_reason)[
            1
        ]
        if len(rows) < size:
            break
    return own, total


def cancel_one(workflow: Workflow, reason: str = "") -> int:
    """Cancel ``workflow`` and its descendants, and read the row again; returns how many runs
    were cancelled (the run and its descendants). WorkflowNotCancellableError for a finished run
    (also one that finished between the read and the UPDATE)."""
    reason = validate_reason(reason)

    def refuse() -> WorkflowNotCancellableError:
        return WorkflowNotCancellableError(
            f"{workflow} is {workflow.state}; only unfinished workflows can be cancelled",
            state=workflow.state,
        )

    if workflow.state not in Workflow.CANCELLABLE_STATES:
        raise refuse()
    own, total = cancel_rows(
        Workflow.objects.filter(pk=workflow.pk).cancellable(), reason, clock.now(), limit=1
    )
    workflow.refresh_from_db()
    if not own:
        raise refuse()
    return total


def announce_cancelled(rows) -> None:
    """``workflow_cancelled`` for each of ``rows`` (sent only when someone listens)."""
    for row in rows.defer("kwargs", "context").iterator(chunk_size=CANCEL_BATCH_SIZE):
        signals.send(
            signals.workflow_cancelled,
            registry.get(row.job_class),
            using=conf.database(),
            workflow=row,
            reason=row.cancel_reason,
        )
