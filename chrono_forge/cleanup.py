"""Retention: delete old terminal workflows and prune old repetition logs.

    from chrono_forge import cleanup
    cleanup.run(older_than=timedelta(days=90))   # -> {"workflows": n, "execution_logs": n, ...}

* A workflow is deleted (with its step logs, error logs and messages) once it has been terminal
  for longer than its window: a completed one counted from ``completed_at``, a cancelled one from
  ``cancelled_at`` (both with the completed window), a failed one from its last change
  (``modified``, written when it failed).
  Running, idle and stalled workflows are never deleted, nor the children of one.
* Repetition logs (``durably_repeat$<name>$<unix_seconds>``) of any workflow are pruned only when a
  window is given, and only behind the coordination log's frontier
  (``metadata["last_execution_at"]``, the last tick handled): nothing at or after it, and no pending
  row, is ever touched. The tick time comes from the step name, not from ``created``.

Workflows go in batches of ``batch_size`` primary keys, each batch in its own short transaction with
one raw DELETE per table (messages, error logs, execution logs, workflows). The batches walk an
index in order (completed workflows by ``(completed_at, id)``, cancelled and failed ones by id),
each starting where the last one stopped, so the cost is linear in what is deleted: no batch
re-reads the candidates before it. Repetition logs are pruned a batch of coordination logs at a
time: one SELECT of their repetition logs and one DELETE per ``batch_size`` of them, not two
queries per periodic task. No row is loaded as a model instance, so memory stays flat however many
rows there are. Raw deletes skip the ORM's ``on_delete``, so links into the deleted rows (a child
workflow's
``parent_execution_log``) are set to NULL explicitly first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from . import clock, conf
from .models import ErrorLog, ExecutionLog, Message, Workflow
from .step_names import kind_prefix, repetition_logs_q, repetition_prefix, tick_seconds

IN_FLIGHT = (Workflow.STATE.idle, Workflow.STATE.running, Workflow.STATE.stalled)
COUNT_KEYS = ("workflows", "execution_logs", "error_logs", "repetition_logs", "messages")
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
    # None only for None, which the signature does not accept.
    older_than = _window(older_than, "older_than")  # type: ignore[assignment]
    completed_older_than = _window(completed_older_than, "completed_older_than") or older_than
    failed_older_than = _window(failed_older_than, "failed_older_than") or older_than
    prune_window = _window(prune_repetitions_older_than, "prune_repetitions_older_than")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    now = clock.now()
    counts = dict.fromkeys(COUNT_KEYS, 0)
    completed_before, failed_before = now - completed_older_than, now - failed_older_than
    _delete_workflows(completed_before, failed_before, counts, batch_size, dry_run, progress)
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


def _keyset(queryset: QuerySet, column: str, batch_size: int):
    """``(column, pk)`` pairs of ``queryset`` in ascending batches, each starting where the last
    one stopped: ``column >= v AND (column > v OR pk > p)``, whose first half is a range of an
    index on ``column`` (no OFFSET, no cursor held open across the deletes, nothing re-read)."""
    last = None
    while True:
        page = queryset.order_by(column, "pk")
        if last is not None:
            value, pk = last
            page = page.filter(
                Q(**{f"{column}__gt": value}) | Q(**{column: value, "pk__gt": pk}),
                **{f"{column}__gte": value},
            )
        rows = list(page.values_list(column, "pk")[:batch_size])
        if not rows:
            return
        yield rows
        last = rows[-1]


def _expired_batches(completed_before: datetime, failed_before: datetime, batch_size: int):
    """Primary keys of the expired workflows in batches: completed ones along the (state,
    completed_at) index, then cancelled and failed ones by id (rarer: no index of their own)."""
    keep = Q(parent_execution_log__workflow__state__in=IN_FLIGHT)
    completed = Workflow.objects.filter(
        state=Workflow.STATE.completed, completed_at__lt=completed_before
    ).exclude(keep)
    cancelled = Workflow.objects.filter(
        state=Workflow.STATE.cancelled, cancelled_at__lt=completed_before
    )
    failed = Workflow.objects.filter(state=Workflow.STATE.failed, modified__lt=failed_before)
    for rows in _keyset(completed, "completed_at", batch_size):
        yield [pk for _, pk in rows]
    for queryset in (cancelled, failed):
        for rows in _keyset(queryset.exclude(keep), "pk", batch_size):
            yield [pk for _, pk in rows]


def _delete_workflows(
    completed_before: datetime,
    failed_before: datetime,
    counts: dict[str, int],
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    workflows = expired_workflows(completed_before, failed_before)
    total = workflows.count() if progress else 0
    db = conf.database()
    for ids in _expired_batches(completed_before, failed_before, batch_size):
        errors = ErrorLog.objects.filter(workflow_id__in=ids)
        logs = ExecutionLog.objects.filter(workflow_id__in=ids)
        messages = Message.objects.filter(workflow_id__in=ids)
        if dry_run:
            counts["messages"] += messages.count()
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
                messages = Message.objects.filter(workflow_id__in=ids)
                # Only branch steps spawn children: a few ids, then an indexed UPDATE (no join,
                # whose plan on a freshly filled table can be quadratic).
                branch_logs = list(
                    ExecutionLog.objects.filter(
                        workflow_id__in=ids, step_name__prefix=BRANCH_PREFIX
                    ).values_list("pk", flat=True)
                )
                _unlink_children(branch_logs)
                # One statement per table: nothing is loaded, however many logs a workflow has.
                # Messages first: they point at the workflow and at the receive step's log.
                counts["messages"] += messages._raw_delete(db)
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
    return ExecutionLog.objects.filter(step_name__prefix=REPEAT_PREFIX).exclude(repetition_logs_q())


def frontier(coordination: ExecutionLog) -> datetime | None:
    """The scheduled time of the last tick handled, or None when no tick was handled yet."""
    value = (coordination.metadata or {}).get("last_execution_at")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


#: Coordination logs whose repetition logs one SELECT reads (bounded by SQLite's 32,766
#: parameters: three per coordination log).
PRUNE_COORDINATIONS = 500


def _prune_repetitions(
    before: datetime,
    counts: dict[str, int],
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    coordinations = coordination_logs()
    total = coordinations.count() if progress else 0
    done = 0
    per_query = min(batch_size, PRUNE_COORDINATIONS)
    # Along the step_name index: the repetition logs that sort between two coordination logs are
    # read once and skipped, never re-read by a later batch.
    for rows in _keyset(coordinations, "step_name", per_query):
        batch = list(
            ExecutionLog.objects.filter(pk__in=[pk for _, pk in rows]).only(
                "id", "workflow_id", "step_name", "metadata"
            )
        )
        counts["repetition_logs"] += _prune_batch(batch, before, batch_size, dry_run)
        done += len(rows)
        if progress:
            progress("repetitions", done, total)


def _prune_batch(
    coordinations: list[ExecutionLog], before: datetime, batch_size: int, dry_run: bool
) -> int:
    """Prune the repetition logs of ``coordinations``: one SELECT for all of them, then one DELETE
    per ``batch_size`` rows."""
    # Strictly before both the window's cutoff and the frontier, in the step name's whole seconds.
    cutoffs: dict[Any, list[tuple[str, int]]] = {}
    where = Q()
    for coordination in coordinations:
        last = frontier(coordination)
        if last is None:
            continue
        prefix = repetition_prefix(coordination.step_name)
        cutoffs.setdefault(coordination.workflow_id, []).append(
            (prefix, math.floor(min(before, last).timestamp()))
        )
        where |= Q(workflow_id=coordination.workflow_id, step_name__prefix=prefix)
    if not cutoffs:
        return 0
    rows = (
        ExecutionLog.objects.filter(where)
        .exclude(state=ExecutionLog.STATE.pending)
        .values_list("pk", "workflow_id", "step_name")
    )
    ids = []
    for pk, workflow_id, name in rows:
        for prefix, cutoff in cutoffs[workflow_id]:
            tick = tick_seconds(name, prefix)
            if tick is not None and tick < cutoff:
                ids.append(pk)
                break
    if not dry_run:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            with transaction.atomic(using=conf.database()):
                _unlink_children(chunk)
                ExecutionLog.objects.filter(pk__in=chunk)._raw_delete(conf.database())
    return len(ids)
