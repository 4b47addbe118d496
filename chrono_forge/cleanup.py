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

Workflows go in batches of ``batch_size`` primary keys, each batch in its own short transaction:
one locking SELECT reads the batch (the next ``batch_size`` candidates along an index, starting
where the last batch stopped: completed workflows by ``(completed_at, id)``, cancelled and failed
ones by id), then one raw DELETE per table (messages, error logs, execution logs, workflows). So
the cost is linear in what is deleted: no batch re-reads the candidates before it. The ids go to
the database as one parameter (an array, a JSON list on SQLite), not as a thousand placeholders
that Python would prepare one by one. No row is loaded as a model instance, so memory stays flat
however many rows there are. A dry run counts set-based instead: one COUNT per table over the
expired workflows (a semi-join), so its statement count does not grow with the number of
workflows.

Repetition logs are pruned set-based: one statement joins every coordination log (its frontier read
and converted by the database) with its repetition logs and returns what may go (a dry run counts
it there); the real run then deletes those ids by primary key in batches of
:func:`repetition_batch` (``batch_size``, ten times that on PostgreSQL), one short transaction
each. So the statement count grows with the rows pruned, never with the number of
periodic tasks, and memory holds one id per pruned row. Raw deletes skip the ORM's ``on_delete``,
so links into the deleted rows (a child workflow's ``parent_execution_log``) are set to NULL
explicitly first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import F, Lookup, Q, QuerySet
from django.db.models.fields.json import KT

from . import clock, conf
from .lookups import successor
from .models import ErrorLog, ExecutionLog, Message, Workflow
from .step_names import SEPARATOR, kind_prefix, repetition_logs_q

IN_FLIGHT = (Workflow.STATE.idle, Workflow.STATE.running, Workflow.STATE.stalled)
COUNT_KEYS = ("workflows", "execution_logs", "error_logs", "repetition_logs", "messages")
REPEAT_PREFIX = kind_prefix("durably_repeat")
BRANCH_PREFIX = kind_prefix("branch")

#: ``progress(stage, done, total)``: stage "workflows" (deleted so far / candidates) or
#: "repetitions" (repetition logs pruned so far / to prune; a dry run reports once, all counted).
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


class _Among(Lookup):
    """Column ``name`` is one of ``values``, sent as one parameter however many there are:
    PostgreSQL ``= ANY(CAST(%s AS bigint[]))``, SQLite ``IN (SELECT value FROM json_each(%s))``
    (both served by the column's index, one probe per value). An ``__in`` of a thousand ids
    costs more in Python than the statement takes in the database (each value prepared by a
    lookup, each placeholder parsed by the driver), and SQLite caps the number of placeholders.

    A lookup rather than a bare boolean expression: Django 6 writes any other expression in a
    SQLite WHERE clause as ``(...) = 1``, which SQLite cannot serve from an index."""

    lookup_name = "among"  # used directly in filter(), never registered on a field
    prepare_rhs = False

    def __init__(self, name: str, values: list) -> None:
        super().__init__(F(name), list(values))

    def as_sql(self, compiler, connection):
        if not self.rhs:
            return "1 = 0", []
        column, params = compiler.compile(self.lhs)
        field = self.lhs.target
        values = [field.get_db_prep_value(value, connection) for value in self.rhs]
        if connection.vendor == "postgresql":
            target = getattr(field, "target_field", None) or field
            return f"{column} = ANY(CAST(%s AS {target.rel_db_type(connection)}[]))", [
                *params,
                values,
            ]
        return f"{column} IN (SELECT value FROM json_each(%s))", [*params, json.dumps(values)]


def _stages(completed_before: datetime, failed_before: datetime) -> list[tuple[QuerySet, str]]:
    """The expired workflows as (queryset, column) walks: completed ones along the (state,
    completed_at) index, then cancelled and failed ones by id (rarer: no index of their own)."""
    keep = Q(parent_execution_log__workflow__state__in=IN_FLIGHT)
    completed = Workflow.objects.filter(
        state=Workflow.STATE.completed, completed_at__lt=completed_before
    )
    cancelled = Workflow.objects.filter(
        state=Workflow.STATE.cancelled, cancelled_at__lt=completed_before
    )
    failed = Workflow.objects.filter(state=Workflow.STATE.failed, modified__lt=failed_before)
    return [
        (completed.exclude(keep), "completed_at"),
        (cancelled.exclude(keep), "pk"),
        (failed.exclude(keep), "pk"),
    ]


def _locked_page(queryset: QuerySet, column: str, last: tuple | None, batch_size: int) -> list:
    """The next ``batch_size`` ``(column, pk)`` pairs of ``queryset`` after ``last``, locked:
    ``column >= v AND (column > v OR pk > p)``, whose first half is a range of an index on
    ``column`` (no OFFSET, no cursor held open across the deletes, nothing re-read). Read under
    the lock, so a row retried since the batch before is no longer terminal and not in it
    (PostgreSQL re-checks a locked row's conditions on its latest version)."""
    page = queryset.order_by(column, "pk")
    if last is not None:
        value, pk = last
        page = page.filter(
            Q(**{f"{column}__gt": value}) | Q(**{column: value, "pk__gt": pk}),
            **{f"{column}__gte": value},
        )
    return list(page.select_for_update(of=("self",)).values_list(column, "pk")[:batch_size])


def _delete_workflows(
    completed_before: datetime,
    failed_before: datetime,
    counts: dict[str, int],
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    workflows = expired_workflows(completed_before, failed_before)
    if dry_run:
        _count_workflows(workflows, counts, progress)
        return
    total = workflows.count() if progress else 0
    db = conf.database()
    for queryset, column in _stages(completed_before, failed_before):
        last = None
        while True:
            with transaction.atomic(using=db):
                rows = _locked_page(queryset, column, last, batch_size)
                if rows:
                    _delete_batch([pk for _, pk in rows], counts, db)
            if rows and progress:
                progress("workflows", counts["workflows"], total)
            # A short page is the last: the lock skips no row without reading the next one.
            if len(rows) < batch_size:
                break
            last = rows[-1]


def _delete_batch(ids: list, counts: dict[str, int], db: str) -> None:
    """One raw DELETE per table for the workflows ``ids`` (locked by the caller's transaction):
    nothing is loaded, however many logs a workflow has."""
    # Only branch steps spawn children: a few ids, then an indexed UPDATE (no join, whose plan
    # on a freshly filled table can be quadratic).
    branch_logs = list(
        ExecutionLog.objects.filter(
            _Among("workflow_id", ids), step_name__prefix=BRANCH_PREFIX
        ).values_list("pk", flat=True)
    )
    _unlink_children(branch_logs)
    # Messages first: they point at the workflow and at the receive step's log.
    counts["messages"] += Message.objects.filter(_Among("workflow_id", ids))._raw_delete(db)
    counts["error_logs"] += ErrorLog.objects.filter(_Among("workflow_id", ids))._raw_delete(db)
    counts["execution_logs"] += ExecutionLog.objects.filter(_Among("workflow_id", ids))._raw_delete(
        db
    )
    counts["workflows"] += Workflow.objects.filter(_Among("pk", ids))._raw_delete(db)


def _count_workflows(workflows: QuerySet, counts: dict[str, int], progress: Progress | None):
    """A dry run's counts, exact and set-based: one COUNT per table over the expired workflows
    (a semi-join on the same conditions the real run deletes by), four statements in all."""
    expired = workflows.values("pk")
    counts["messages"] += Message.objects.filter(workflow__in=expired).count()
    counts["error_logs"] += ErrorLog.objects.filter(workflow__in=expired).count()
    counts["execution_logs"] += ExecutionLog.objects.filter(workflow__in=expired).count()
    counts["workflows"] += workflows.count()
    if progress:
        progress("workflows", counts["workflows"], counts["workflows"])


def _unlink_children(log_ids: list) -> None:
    # A raw delete skips on_delete=SET_NULL. ``modified`` is left alone on purpose: it is a failed
    # workflow's terminal time, and losing its parent does not change when it failed.
    if not log_ids:
        return
    # One parameter, not an IN list: SQLite plans an UPDATE with a thousand placeholders as a
    # scan of every workflow, the JSON list as probes of the parent index.
    Workflow.objects.filter(_Among("parent_execution_log_id", log_ids)).update(
        parent_execution_log=None
    )


def _unlink_children_in_range(log_ids: list) -> None:
    """:func:`_unlink_children` for a sorted chunk of many ids: the links into its id range are
    read from the parent index in one range (usually none), and only those into the chunk's ids
    are updated, instead of one index probe per id. The pruning's chunks are disjoint ranges, so
    the whole run reads each link at most once."""
    to_python = ExecutionLog._meta.pk.to_python
    wanted = {to_python(pk) for pk in log_ids}
    links = Workflow.objects.filter(
        parent_execution_log_id__gte=log_ids[0], parent_execution_log_id__lte=log_ids[-1]
    ).values_list("pk", "parent_execution_log_id")
    linked = [pk for pk, parent in links.iterator(chunk_size=2000) if parent in wanted]
    if linked:
        Workflow.objects.filter(_Among("pk", linked)).update(parent_execution_log=None)


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


#: The frontiers the pruning statement reads: the ISO 8601 time ``datetime.isoformat()`` writes for
#: an aware datetime (``2026-12-04T01:00:00.123456+00:00``; ``Z`` and a space separator too), a
#: real calendar date (Feb 29 in leap years only), an offset within ±15:59 (what PostgreSQL's
#: timestamptz takes). The database then converts it without raising; a coordination log whose
#: frontier is anything else (absent, naive, malformed) keeps all its repetition logs, as Python's
#: :func:`frontier` (None) would.
_YEAR = r"(19|[2-9][0-9])[0-9][0-9]"
_LEAP_YEAR = r"((19|[2-9][0-9])(0[48]|[2468][048]|[13579][26])|(2[048]|[3579][26]|[468][048])00)"
_DAY = (
    rf"({_YEAR}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)"
    rf"|(0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)"
)
FRONTIER_PATTERN = (
    rf"^{_DAY}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{{1,6}})?"
    r"(Z|[+-](0[0-9]|1[0-5]):[0-5][0-9])$"
)


def _prunable_sql(connection, before: datetime, select: str) -> tuple[str, list]:
    """One statement over every periodic task at once: ``select`` (``COUNT(*)`` or ``r.id``) of the
    repetition logs that may go. A repetition log ``r`` of coordination log ``c`` (same workflow,
    ``r.step_name`` = ``c.step_name`` + ``$`` + whole seconds) goes when it is not pending and its
    second is before both the window's cutoff and the frontier's whole second. The frontier is read
    and converted by the database (its fraction dropped first: SQLite rounds it to milliseconds),
    so no coordination log is loaded into Python and the statement count does not depend on how
    many there are."""
    # The coordination logs are the prefix's rows without a second "$" (what coordination_logs()
    # says with a regex, here with a LIKE: a regex per row of the prefix costs more than the rest).
    coordinations = (
        ExecutionLog.objects.filter(step_name__prefix=REPEAT_PREFIX)
        .annotate(frontier=KT("metadata__last_execution_at"))
        .values("workflow_id", "step_name", "frontier")
    )
    coordination_sql, params = coordinations.query.get_compiler(connection=connection).as_sql()
    quote = connection.ops.quote_name
    table = quote(ExecutionLog._meta.db_table)
    # The frontier's whole second, as text the database parses: date and time, then the offset.
    whole = (
        "SUBSTR(f.frontier, 1, 19) || CASE WHEN SUBSTR(f.frontier, LENGTH(f.frontier), 1) = 'Z'"
        " THEN 'Z' ELSE SUBSTR(f.frontier, LENGTH(f.frontier) - 5) END"
    )
    suffix = f"SUBSTR(r.{quote('step_name')}, c.prefix_length + 1)"
    name_range, range_params = "", []
    # The frontier test comes after the LIKE, written last: SQLite runs its REGEXP in Python and
    # reads the JSON for it, so only the coordination logs may reach it, not their repetitions.
    regex = "~" if connection.vendor == "postgresql" else "REGEXP"
    if connection.vendor == "postgresql":
        cutoff = f"LEAST(%s, FLOOR(EXTRACT(EPOCH FROM CAST({whole} AS timestamptz))))"
        # CASE, not AND: PostgreSQL may evaluate the cast before the test in a conjunction.
        tick = f"CASE WHEN {suffix} ~ '^[0-9]+$' THEN CAST({suffix} AS numeric) END"
    else:
        cutoff = f"MIN(%s, CAST(STRFTIME('%%s', {whole}) AS INTEGER))"
        digits = f"{suffix} GLOB '[0-9]*' AND {suffix} NOT GLOB '*[^0-9]*'"
        tick = f"CASE WHEN {digits} THEN CAST({suffix} AS INTEGER) END"
        # SQLite compares text bytewise: the prefix as a range of the (workflow, step_name)
        # index, so only the task's repetition logs are read, not every log of the workflow.
        # (PostgreSQL's collation order is not bytewise: there the workflow's logs are filtered.)
        name_range = (
            f" AND r.{quote('step_name')} >= c.step_name || %s"
            f" AND r.{quote('step_name')} < c.step_name || %s"
        )
        range_params = [SEPARATOR, successor(SEPARATOR)]
    # Materialized: each coordination log's cutoff is computed once, not once per repetition log
    # compared with it (SQLite would otherwise re-read the JSON for every reference).
    sql = (
        f"WITH c AS MATERIALIZED (SELECT f.workflow_id, f.step_name,"
        f" LENGTH(f.step_name) + 1 AS prefix_length, {cutoff} AS cutoff"
        f" FROM ({coordination_sql}) f WHERE f.step_name NOT LIKE %s ESCAPE '\\'"
        f" AND f.frontier {regex} %s)"
        f" SELECT {select} FROM c INNER JOIN {table} r ON r.{quote('workflow_id')} = c.workflow_id"
        f" WHERE SUBSTR(r.{quote('step_name')}, 1, c.prefix_length) = c.step_name || %s"
        f"{name_range} AND r.{quote('state')} <> %s AND {tick} < c.cutoff"
    )
    second_separator = f"{_like_escape(REPEAT_PREFIX)}%{SEPARATOR}%"
    before_seconds = math.floor(before.timestamp())
    return sql, [
        before_seconds,
        *params,
        second_separator,
        FRONTIER_PATTERN,
        SEPARATOR,
        *range_params,
        ExecutionLog.STATE.pending,
    ]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def repetition_batch(batch_size: int, connection) -> int:
    """Repetition logs per pruning transaction. On PostgreSQL each commit waits for the WAL's
    fsync (most of a 1,000-row batch's time at 500k workflows): a batch there deletes ten times
    ``batch_size``, about the rows of a workflow batch (a workflow has some ten logs). SQLite in
    WAL mode does not sync at a commit, and larger batches measured slower there: one id per
    ``batch_size``."""
    return batch_size * 10 if connection.vendor == "postgresql" else batch_size


def _prune_repetitions(
    before: datetime,
    counts: dict[str, int],
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    """Count (dry run) or delete the prunable repetition logs of every periodic task: one SELECT
    over all of them, then one short transaction per :func:`repetition_batch` ids (children
    unlinked, one DELETE by primary key). The statement count grows with the rows deleted, never
    with the number of periodic tasks; memory holds the ids to delete (one per pruned row),
    nothing per task."""
    db = conf.database()
    connection = connections[db]
    if dry_run:
        sql, params = _prunable_sql(connection, before, "COUNT(*)")
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            (found,) = cursor.fetchone()
        counts["repetition_logs"] += found
        if progress:
            progress("repetitions", found, found)
        return
    sql, params = _prunable_sql(connection, before, f"r.{connection.ops.quote_name('id')}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [pk for (pk,) in cursor.fetchall()]
    ids.sort()  # the deletes then walk the primary key in order
    per_batch = repetition_batch(batch_size, connection)
    for start in range(0, len(ids), per_batch):
        chunk = ids[start : start + per_batch]
        with transaction.atomic(using=db):
            _unlink_children_in_range(chunk)
            # Pending is re-checked under the DELETE: nothing the engine still waits on goes.
            counts["repetition_logs"] += (
                ExecutionLog.objects.filter(_Among("pk", chunk))
                .exclude(state=ExecutionLog.STATE.pending)
                ._raw_delete(db)
            )
        if progress:
            progress("repetitions", start + len(chunk), len(ids))
