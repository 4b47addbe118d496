"""The operator pages' database reads. None issues a query whose cost grows with the size of a
table: counts are capped (``COUNT`` over a ``LIMIT`` subquery), scans have a row cap, and lookups
are ranges of an index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Min, Q

from ..models import ErrorLog, ExecutionLog, Message, Workflow
from ..step_names import kind_prefix
from ..steps import REPETITION_LOG_PATTERN
from .formatting import BLOCKED_STATES, STATES, parse_step_name, parse_time, seconds_between

#: The Waiting page's "oldest per class" shows at most this many classes.
DISTINCT_CLASSES = 200
#: Capped counts stop here and show as "5000+".
COUNT_CAP = 5000
#: The stranded and waiting pages read at most this many rows.
SCAN_CAP = 500
#: Repetition summaries read at most this many repetition rows per periodic task.
REPETITION_SCAN = 1000
#: Error cards loaded on a workflow page (newest first; a link leads to the rest).
ERROR_CAP = 50
#: Timeline rows shown on a workflow page.
TIMELINE_CAP = 1000
#: The workflow page shows this many messages, newest first.
MESSAGE_CAP = 50


def capped_count(queryset, cap: int = COUNT_CAP) -> int:
    """``SELECT COUNT(*) FROM (... LIMIT cap + 1)``: exact up to ``cap``, ``cap + 1`` beyond."""
    return queryset.order_by()[: cap + 1].count()


def show_count(count: int, cap: int = COUNT_CAP) -> str:
    return f"{cap}+" if count > cap else str(count)


def parse_pk(value: Any, model=ErrorLog) -> Any:
    """``value`` as ``model``'s primary key (integer or UUID), or None when it cannot be one."""
    try:
        return model._meta.pk.to_python(value) if value not in (None, "") else None
    except ValidationError:
        return None


# -- waits -----------------------------------------------------------------------------------------
@dataclass
class WaitInfo:
    workflow_id: Any
    kind: str  # "event" (continue_if), "message" (receive) or "poll" (wait_until)
    condition: str
    since: datetime | None
    timeout_at: datetime | None
    step_name: str

    def age(self, now: datetime) -> float | None:
        return seconds_between(self.since, now)

    @property
    def waits_for_event(self) -> bool:
        """Only something outside the run ends it (a wake-up, a message), never the clock."""
        return self.kind == "event" or (self.kind == "message" and self.timeout_at is None)

    @property
    def step(self) -> str:
        """The waiting step's own name (``manual_approval``), not only its condition method."""
        return parse_step_name(self.step_name).name


EVENT_WAIT = kind_prefix("continue_if")
POLL_WAIT = kind_prefix("wait_until")
MESSAGE_WAIT = kind_prefix("receive")


def wait_steps_q() -> Q:
    """``continue_if`` / ``receive`` / ``wait_until`` logs, in any state."""
    return (
        Q(step_name__prefix=EVENT_WAIT)
        | Q(step_name__prefix=MESSAGE_WAIT)
        | Q(step_name__prefix=POLL_WAIT)
    )


def pending_waits_q() -> Q:
    """Pending ``continue_if`` / ``receive`` / ``wait_until`` logs (ranges of the (state,
    step_name) index)."""
    return Q(state=ExecutionLog.STATE.pending) & wait_steps_q()


def has_pending_wait(prefix: str | None = None) -> Q:
    """For a Workflow queryset: the row has a pending wait (of the kind ``prefix``, e.g.
    ``EVENT_WAIT``; default any). A non-correlated ``pk__in`` over the pending waits (ranges of
    the (state, step_name) index, read once), not a correlated ``EXISTS``: with one, SQLite probed
    that index's whole range once per outer row (minutes at 500k workflows)."""
    waits = (
        pending_waits_q()
        if prefix is None
        else Q(state=ExecutionLog.STATE.pending, step_name__prefix=prefix)
    )
    return Q(pk__in=ExecutionLog.objects.filter(waits).values("workflow_id"))


def event_waits():
    """Pending ``continue_if`` logs of idle workflows, and ``receive`` logs without a timeout: the
    event waits the Waiting page lists (nothing but the outside world ends them)."""
    return ExecutionLog.objects.filter(
        Q(step_name__prefix=EVENT_WAIT)
        | (Q(step_name__prefix=MESSAGE_WAIT) & ~Q(metadata__has_key="timeout_at")),
        state=ExecutionLog.STATE.pending,
        workflow__state=Workflow.STATE.idle,
    )


def oldest_event_wait_per_class() -> list[ExecutionLog]:
    """The oldest pending event wait of each class (at most DISTINCT_CLASSES classes), with its
    workflow: one GROUP BY over the event waits, then one query for those logs, found by their
    start times in the ``started_at`` index (matched on the pending-wait range instead, SQLite
    read every event wait again: 80-150 ms at 500k workflows)."""
    oldest = (
        event_waits()
        .order_by()
        .values("workflow__job_class")
        .annotate(first=Min("started_at"))
        .order_by("first")[:DISTINCT_CLASSES]
    )
    wanted = {row["workflow__job_class"]: row["first"] for row in oldest if row["first"]}
    if not wanted:
        return []
    q = Q()
    for job_class, first in wanted.items():
        q |= Q(workflow__job_class=job_class, started_at=first)
    # The candidates by primary key (a list read off the started_at index), so that the planner
    # looks the rows up instead of reading the pending-wait range again.
    started = ExecutionLog.objects.filter(started_at__in=set(wanted.values()))
    logs = (
        event_waits()
        .filter(q, pk__in=started.values("pk"))
        .select_related("workflow")
        .defer(
            "result",
            "workflow__kwargs",
            "workflow__options",
            "workflow__context",
            "workflow__result",
        )
        .order_by("id")
    )
    seen: dict[str, ExecutionLog] = {}
    for log in logs[: len(wanted) * 2]:
        seen.setdefault(log.workflow.job_class, log)
    return list(seen.values())


def wait_info(log: ExecutionLog) -> WaitInfo:
    parsed = parse_step_name(log.step_name)
    metadata = log.metadata if isinstance(log.metadata, dict) else {}
    if parsed.kind == "receive":
        kind, condition = "message", f"message {metadata.get('topic') or parsed.name}"
    else:
        kind = "event" if parsed.kind == "continue_if" else "poll"
        condition = str(metadata.get("condition") or parsed.name)
    return WaitInfo(
        workflow_id=log.workflow_id,
        kind=kind,
        condition=condition,
        since=log.started_at,
        timeout_at=parse_time(metadata.get("timeout_at")),
        step_name=log.step_name,
    )


def latest_pending_waits(workflow_ids) -> dict[Any, WaitInfo]:
    """The latest pending ``wait_until``/``continue_if``/``receive`` log of each workflow, in one
    query. The state is checked here, not in SQL: with it there, SQLite read every pending log
    of the table through the (state, step_name) index instead of probing the page's workflows
    in the (workflow, step_name) unique index."""
    ids = list(workflow_ids)
    if not ids:
        return {}
    logs = (
        ExecutionLog.objects.filter(wait_steps_q(), workflow_id__in=ids)
        .only("id", "workflow_id", "step_name", "state", "started_at", "metadata")
        .order_by("workflow_id", F("started_at").desc(nulls_last=True), "-id")
    )
    waits: dict[Any, WaitInfo] = {}
    for log in logs:
        if log.state == ExecutionLog.STATE.pending and log.workflow_id not in waits:
            waits[log.workflow_id] = wait_info(log)
    return waits


# -- the workflow page's reads ---------------------------------------------------------------------
def timeline_logs(workflow_id: Any) -> tuple[list[ExecutionLog], bool]:
    """A workflow's step logs in the order they started (repetitions aside: their periodic task
    sums them up), the first TIMELINE_CAP of them, and whether there are more (one query)."""
    logs = list(timeline_queryset(workflow_id)[: TIMELINE_CAP + 1])
    return logs[:TIMELINE_CAP], len(logs) > TIMELINE_CAP


def timeline_queryset(workflow_id: Any):
    """The timeline's logs, sorted by ``started_at + 0``, which no index holds. Sorted by the
    bare column, PostgreSQL walked the whole started_at index for a periodic workflow (it
    guesses that most of the workflow's 100k logs pass the repetition filter, so the first page
    would come soon; a handful do): 3.9 s at 4.5M step logs. Now it reads the workflow's own
    logs from its index and sorts those."""
    started = ExpressionWrapper(F("started_at") + timedelta(0), output_field=DateTimeField())
    return (
        ExecutionLog.objects.filter(workflow_id=workflow_id)
        .exclude(step_name__regex=REPETITION_LOG_PATTERN)
        .order_by(started.asc(nulls_last=True), "id")
    )


def newest_errors(workflow_id: Any) -> tuple[list[ErrorLog], bool]:
    """A workflow's newest ERROR_CAP errors, newest first, and whether there are more (one
    query)."""
    errors = list(
        ErrorLog.objects.filter(workflow_id=workflow_id)
        .defer("context")
        .order_by("-created", "-id")[: ERROR_CAP + 1]
    )
    return errors[:ERROR_CAP], len(errors) > ERROR_CAP


def errors_by_pk(pks: list) -> list[ErrorLog]:
    """The errors with these primary keys (one query): the ones failure markers name that are
    older than the newest ERROR_CAP."""
    return list(ErrorLog.objects.filter(pk__in=pks).defer("context"))


def parent_log(execution_log_id: Any) -> ExecutionLog | None:
    """The branch step a child workflow was spawned by, with its workflow's class and key."""
    return (
        ExecutionLog.objects.select_related("workflow")
        .only("id", "step_name", "workflow__id", "workflow__job_class", "workflow__key")
        .filter(pk=execution_log_id)
        .first()
    )


def workflow_messages(workflow_id: Any) -> tuple[list[Message], bool]:
    """The newest MESSAGE_CAP messages of a workflow with the step that consumed each (one
    query), and whether there are more."""
    rows = list(
        Message.objects.filter(workflow_id=workflow_id)
        .select_related("consumed_by")
        .only(
            "id",
            "workflow_id",
            "topic",
            "payload",
            "idempotency_key",
            "created",
            "consumed_at",
            "consumed_by__id",
            "consumed_by__step_name",
        )
        .order_by("-id")[: MESSAGE_CAP + 1]
    )
    return rows[:MESSAGE_CAP], len(rows) > MESSAGE_CAP


# -- periodic tasks and branches -------------------------------------------------------------------
def repetition_prefix(name: str) -> str:
    return f"durably_repeat${name}$"


def repetitions_queryset(workflow_id, name: str):
    # startswith escapes % and _, and the prefix is a range scan on the (workflow, step_name) index.
    return ExecutionLog.objects.filter(
        workflow_id=workflow_id, step_name__prefix=repetition_prefix(name)
    )


def newest_repetitions(workflow_id, name: str) -> tuple[list[ExecutionLog], bool]:
    """A periodic task's newest REPETITION_SCAN repetitions (by schedule), and whether there are
    more (one query)."""
    rows = list(
        repetitions_queryset(workflow_id, name)
        .only("id", "step_name", "state", "started_at", "completed_at", "error_class", "metadata")
        .order_by("-step_name")[: REPETITION_SCAN + 1]
    )
    return rows[:REPETITION_SCAN], len(rows) > REPETITION_SCAN


def branch_children(log_id: Any):
    """The child workflows one branch step spawned."""
    return Workflow.objects.filter(parent_execution_log_id=log_id)


def blocked_children(log_id: Any) -> int:
    return capped_count(branch_children(log_id).filter(state__in=BLOCKED_STATES))


def live_child_counts(log_id: Any) -> tuple[int, int, int]:
    """(spawned, pending, never started) of a branch not polled yet, each capped."""
    children = branch_children(log_id)
    return (
        capped_count(children),
        capped_count(children.filter(state__in=Workflow.EXECUTABLE_STATES)),
        capped_count(children.filter(started_at__isnull=True)),
    )


def filter_state(queryset, value: str | None):
    """Workflows in a state, or in a group of them: ``blocked`` (failed + stalled), ``in_flight``
    (idle + running); anything else leaves the queryset as it is."""
    if value == "blocked":
        return queryset.filter(state__in=BLOCKED_STATES)
    if value == "in_flight":
        return queryset.filter(state__in=Workflow.EXECUTABLE_STATES)
    if value is not None and value in Workflow.STATE:
        return queryset.filter(state=value)
    return queryset


def step_log(log_id: Any) -> ExecutionLog | None:
    """The step log ``log_id`` (an id from a form: None when it cannot be one), its id, workflow
    and step name only."""
    pk = parse_pk(log_id, ExecutionLog)
    if pk is None:
        return None
    return ExecutionLog.objects.filter(pk=pk).only("id", "workflow_id", "step_name").first()


def workflow_step_log(workflow_id: Any, log_id: Any) -> ExecutionLog | None:
    """The step log ``log_id`` of that workflow (an id from a URL: None when it cannot be one)."""
    pk = parse_pk(log_id, ExecutionLog)
    return ExecutionLog.objects.filter(pk=pk, workflow_id=workflow_id).first() if pk else None


def children_in_state(log_id: Any, state: str) -> int:
    return capped_count(filter_state(branch_children(log_id), state))


def children_page(log_id: Any, state: str, before: Any, size: int) -> tuple[list[Workflow], bool]:
    """A branch's children in ``state``, newest first, ``size`` of them before the id ``before``
    (keyset), and whether more follow."""
    queryset = filter_state(branch_children(log_id), state).defer(*BIG_COLUMNS)
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    return _page(queryset.order_by("-id"), size)


def coordination_log(workflow_id: Any, name: str) -> ExecutionLog | None:
    """The coordination log of the periodic task ``name`` (its repetitions are separate rows)."""
    return ExecutionLog.objects.filter(
        workflow_id=workflow_id, step_name=f"durably_repeat${name}"
    ).one()


def repetitions_page(
    workflow_id: Any, name: str, before: str, size: int
) -> tuple[list[ExecutionLog], bool]:
    """``size`` repetitions, newest schedule first, scheduled before the unix time ``before``
    (digits; anything else: from the newest), and whether more follow. Keyset on the step name:
    its unix-seconds suffix sorts by schedule, and the range is a scan of the (workflow,
    step_name) unique index."""
    queryset = repetitions_queryset(workflow_id, name).defer("result")
    if before.isdigit():
        queryset = queryset.filter(step_name__lt=f"{repetition_prefix(name)}{before}")
    return _page(queryset.order_by("-step_name"), size)


# -- the list pages --------------------------------------------------------------------------------
#: JSON columns the list pages never show.
BIG_COLUMNS = ("kwargs", "options", "context", "result")


def _page(queryset, size: int) -> tuple[list, bool]:
    """The first ``size`` rows of an ordered queryset and whether more follow (one query: it reads
    one row past the page)."""
    rows = list(queryset[: size + 1])
    return rows[:size], len(rows) > size


def stranded_page(after: Any, size: int) -> tuple[list[Workflow], bool]:
    page = Workflow.objects.stranded().defer(*BIG_COLUMNS).order_by("id")
    if after is not None:
        page = page.filter(pk__gt=after)
    return _page(page, size)


def overdue_rows() -> tuple[list[Workflow], bool]:
    """What ``resume-overdue`` picks, the most overdue first, at most SCAN_CAP rows, and whether
    there are more."""
    rows = (
        Workflow.objects.overdue()
        .defer(*BIG_COLUMNS)
        .order_by(F("next_run_at").asc(nulls_first=True), "id")
    )
    return _page(rows, SCAN_CAP)


def waiting_page(after: Any, size: int) -> tuple[list[Workflow], bool]:
    """Idle workflows with a pending wait, by id after ``after`` (keyset)."""
    page = (
        Workflow.objects.filter(state=Workflow.STATE.idle)
        .filter(has_pending_wait())
        .defer(*BIG_COLUMNS)
        .order_by("id")
    )
    if after is not None:
        page = page.filter(pk__gt=after)
    return _page(page, size)


def state_counts(cap: int) -> dict[str, int]:
    """Workflows per state, each capped at ``cap`` (one ``COUNT`` over a ``LIMIT`` subquery per
    state, served by the (state, completed_at) index)."""
    return {state: capped_count(Workflow.objects.filter(state=state), cap) for state in STATES}


def newest_per_class_and_state(window: int) -> tuple[list[dict], bool]:
    """``{"job_class", "state", "n"}`` rows over the newest ``window`` workflows (a ``GROUP BY``
    over a primary-key range), and whether the table holds more than ``window``."""
    floor = list(Workflow.objects.order_by("-id").values_list("id", flat=True)[window - 1 : window])
    rows = Workflow.objects.filter(pk__gte=floor[0]) if floor else Workflow.objects.all()
    grouped = rows.order_by().values("job_class", "state").annotate(n=Count("id"))
    return list(grouped), bool(floor)
