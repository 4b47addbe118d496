"""Retention: delete old terminal workflows and prune old repetition logs.

    from chrono_forge import cleanup
    cleanup.run(older_than=timedelta(days=90))   # -> {"workflows": n, "execution_logs": n, ...}

* A workflow is deleted once it has been terminal for longer than its window: a completed one
  counted from ``completed_at``, a cancelled one from ``cancelled_at`` (both with the completed
  window), a failed one from its last change (``modified``, written when it failed).
  Running, idle and stalled workflows are never deleted, nor the children of one.
* Repetition logs (``durably_repeat$<name>$<unix_seconds>``) of any workflow are pruned only when a
  window is given, and only behind the coordination log's frontier
  (``metadata["last_execution_at"]``, the last tick handled): nothing at or after it, and no pending
  row, is ever touched. The tick time comes from the step name, not from ``created``.

Workflows go in batches of ``batch_size`` primary keys, each batch in its own short transaction with
one raw DELETE per table (error logs, execution logs, workflows); repetition logs are pruned
``batch_size`` rows at a time. No row is loaded as a model instance, so memory stays flat however
many rows there are. Raw deletes skip the ORM's ``on_delete``, so links into the deleted rows (a
child workflow's ``parent_execution_log``) are set to NULL explicitly first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from . import clock, conf
from .models import ErrorLog, ExecutionLog, Workflow
from .step_names import kind_prefix, repetition_logs_q, repetition_prefix, tick_seconds

IN_FLIGHT = (Workflow.STATE.idle, Workflow.STATE.running, Workflow.STATE.stalled)
COUNT_KEYS = ("workflows", "execution_logs", "error_logs", "repetition_logs")
REPEAT_PREFIX = kind_prefix("durably_repeat")
BRANCH_PREFIX = kind_prefix("branch")

#: ``progress(stage, done, total)``: stage "workflows" (deleted so far / candidates) or
#: "repetitions" (coordination logs scanned / to scan).
Progress = Callable[[str, int, int], None]


def run(
    older_than: timedelta = timedelta(days=90),
    completed_older_than: timedelta | None = None,
    failed_older_than: timedelta | None = None,
    prune_repetitions_older_than: timedelta | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Delete terminal workflows (with their logs) and prune repetition logs; returns exact counts
    of what was deleted (with ``dry_run``: of what would be)."""
    older_than = _window(older_than, "older_than")
    completed_older_than = _window(completed_older_than, "completed_older_than") or older_than
    failed_older_than = _window(failed_older_than, "failed_older_than") or older_than
    prune_window = _window(prune_repetitions_older_than, "prune_repetitions_older_than")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    now = clock.now()
    counts = dict.fromkeys(COUNT_KEYS, 0)
    workflows = expired_workflows(now - completed_older_than, now - failed_older_than)
    _delete_workflows(workflows, counts, batch_size, dry_run, progress)
    if prune_window is not None:
        _prune_repetitions(now - prune_window, counts, batch_size, dry_run, progress)
    return counts


def expired_workflows(completed_before: datetime, failed_before: datetime) -> QuerySet:
    """Terminal workflows past their retention window (never running, idle or stalled ones).
    A branch child stays while its parent is in flight: the parent's merge may still count it."""
    return Workflow.objects.filter(
        Q(state=Workflow.STATE.completed, completed_at__lt=completed_before)
        | Q(state=Workflow.STATE.cancelled, cancelled_at__lt=completed_before)
        | Q(state=Workflow.STATE.failed, modified__lt=failed_before)
    ).exclude(parent_execution_log__workflow__state__in=IN_FLIGHT)


def _window(value: Any, name: str) -> timedelta | None:
    if value is None:
        return None
    try:
        window = conf.as_timedelta(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a timedelta or a number of seconds, got {value!r}"
        ) from None
    if window < timedelta(0):
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return window


def _batches(queryset: QuerySet, batch_size: int):
    """Primary keys of ``queryset`` in ascending batches (keyset pagination: no OFFSET, no cursor
    held open across the deletes)."""
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return
        yield ids
        last = ids[-1]


def _delete_workflows(
    workflows: QuerySet,
    counts: dict[str, int],
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    total = workflows.count() if progress else 0
    db = conf.database()
    for ids in _batches(workflows, batch_size):
        errors = ErrorLog.objects.filter(workflow_id__in=ids)
        logs = ExecutionLog.objects.filter(workflow_id__in=ids)
        if dry_run:
            counts["error_logs"] += errors.count()
            counts["execution_logs"] += logs.count()
            counts["workflows"] += len(ids)
        else:
            with transaction.atomic(using=db):
                # Re-select under the lock: a row retried since the page was read is not terminal.
                ids = list(
                    workflows.filter(pk__in=ids)
                    .select_for_update(of=("self",))
                    .values_list("pk", flat=True)
                )
                errors = ErrorLog.objects.filter(workflow_id__in=ids)
                logs = ExecutionLog.objects.filter(workflow_id__in=ids)
                # Only branch steps spawn children: a few ids, then an indexed UPDATE (no join,
                # whose plan on a freshly filled table can be quadratic).
                branch_logs = list(
                    ExecutionLog.objects.filter(
                        workflow_id__in=ids, step_name__startswith=BRANCH_PREFIX
                    ).values_list("pk", flat=True)
                )
                _unlink_children(branch_logs)
                # One statement per table: nothing is loaded, however many logs a workflow has.
                counts["error_logs"] += errors._raw_delete(db)
                counts["execution_logs"] += logs._raw_delete(db)
                counts["workflows"] += Workflow.objects.filter(pk__in=ids)._raw_delete(db)
        if progress:
            progress("workflows", counts["workflows"], total)


def _unlink_children(log_ids: list) -> None:
    # A raw delete skips on_delete=SET_NULL. ``modified`` is left alone on purpose: it is a failed
    # workflow's terminal time, and losing its parent does not change when it failed.
    if log_ids:
        Workflow.objects.filter(parent_execution_log_id__in=log_ids).update(
            parent_execution_log=None
        )


# -- repetition logs ------------------------------------------------------------------------------
def coordination_logs() -> QuerySet:
    """``durably_repeat$<name>`` rows (the repetition logs have a second ``$``)."""
    return ExecutionLog.objects.filter(step_name__startswith=REPEAT_PREFIX).exclude(
        repetition_logs_q()
    )


def frontier(coordination: ExecutionLog) -> datetime | None:
    """The scheduled time of the last tick handled, or None when no tick was handled yet."""
    value = (coordination.metadata or {}).get("last_execution_at")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _prune_repetitions(
    before: datetime,
    counts: dict[str, int],
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    coordinations = coordination_logs().only("id", "workflow_id", "step_name", "metadata")
    total = coordinations.count() if progress else 0
    done = 0
    for ids in _batches(coordinations, batch_size):
        for coordination in coordinations.filter(pk__in=ids).order_by("pk"):
            counts["repetition_logs"] += _prune_one(coordination, before, batch_size, dry_run)
            done += 1
        if progress:
            progress("repetitions", done, total)


def _prune_one(coordination: ExecutionLog, before: datetime, batch_size: int, dry_run: bool) -> int:
    last = frontier(coordination)
    if last is None:
        return 0
    # Strictly before both the window's cutoff and the frontier, in the step name's whole seconds.
    cutoff = math.floor(min(before, last).timestamp())
    prefix = repetition_prefix(coordination.step_name)
    candidates = ExecutionLog.objects.filter(
        workflow_id=coordination.workflow_id, step_name__startswith=prefix
    ).exclude(state=ExecutionLog.STATE.pending)
    pruned = 0
    last_name = None
    while True:
        # Keyset on (workflow_id, step_name): the unique index serves it in order, page after page.
        page = candidates.order_by("step_name")
        if last_name is not None:
            page = page.filter(step_name__gt=last_name)
        rows = list(page.values_list("pk", "step_name")[:batch_size])
        if not rows:
            return pruned
        last_name = rows[-1][1]
        ids = [
            pk
            for pk, name in rows
            if (tick := tick_seconds(name, prefix)) is not None and tick < cutoff
        ]
        if ids and not dry_run:
            with transaction.atomic(using=conf.database()):
                _unlink_children(ids)
                ExecutionLog.objects.filter(pk__in=ids)._raw_delete(conf.database())
        pruned += len(ids)
