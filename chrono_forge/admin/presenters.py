"""What the admin pages show, computed from a bounded number of queries.

Everything here is presentation: parsing step names, humanising durations and metadata, and building
the page models (timeline, periodic tasks, branches, waits). No function issues a query whose cost
grows with the size of a table: counts are capped (``COUNT`` over a ``LIMIT`` subquery) and scans
have a row cap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Exists, F, Min, OuterRef, Q

from .. import clock, conf
from ..exceptions import ReplayDivergence
from ..formatting import human_duration  # noqa: F401  (re-exported: views, tags use p.)
from ..liveness import (  # noqa: F401  (re-exported: the admin views use them through p.)
    Liveness,
    is_stranded,
    liveness,
    overdue_grace,
    parked_reason,
    pending_merges,
)
from ..models import ErrorLog, ExecutionLog, Message, Workflow
from ..step_names import is_on_cancel_marker, kind_prefix
from ..steps import REPETITION_LOG_PATTERN
from ..tries import POLLING_KINDS, StepTries, retry_times, step_tries

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
#: A branch poll is overdue when its next poll is this far in the past.
POLL_OVERDUE = timedelta(seconds=120)
#: Steps this long get the "slow" (amber) colour.
SLOW = 60

#: Metadata keys that mean nothing to an operator (ids and the poller's bookkeeping).
INTERNAL_KEYS = frozenset({"error_log_id", "poll", "poll_token", "cursors", "parent_id"})
#: Metadata keys holding a number of seconds.
SECONDS_KEYS = frozenset(
    {"every", "timeout", "check_interval", "min_interval", "max_interval", "eta_seconds"}
)

#: ErrorLog.error_class of a replay-divergence warning.
DIVERGENCE_CLASS = f"{ReplayDivergence.__module__}.{ReplayDivergence.__qualname__}"

KIND_LABELS = {
    "durably_execute": "execute",
    "wait": "wait",
    "wait_until": "wait until",
    "continue_if": "continue if",
    "durably_repeat": "repeat",
    "branch": "branch",
    "merge": "merge",
    "receive": "receive",
    "send_to": "send to",
    "patch": "patched",
}
WAIT_KINDS = frozenset(
    {"wait", "wait_until", "continue_if", "merge", "durably_repeat", "branch", "receive"}
)

BLOCKED_STATES = (Workflow.STATE.failed, Workflow.STATE.stalled)
STATES = ("idle", "running", "completed", "failed", "stalled", "cancelled")


# -- small formatters ------------------------------------------------------------------------------
def capped_count(queryset, cap: int = COUNT_CAP) -> int:
    """``SELECT COUNT(*) FROM (... LIMIT cap + 1)``: exact up to ``cap``, ``cap + 1`` beyond."""
    return queryset.order_by()[: cap + 1].count()


def show_count(count: int, cap: int = COUNT_CAP) -> str:
    return f"{cap}+" if count > cap else str(count)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    value = (end - start).total_seconds()
    return value if value >= 0 else None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def short_class(job_class: str) -> str:
    return job_class.rsplit(".", 1)[-1]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(value: Any, limit: int = 120) -> str:
    """A one-line JSON rendering of a stored value."""
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return truncate(text, limit)


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def bucket(percent: float) -> int:
    """A percentage rounded to a multiple of 5 (one CSS class per step: no inline styles)."""
    if percent <= 0:
        return 0
    return max(5, min(100, 5 * round(percent / 5)))


def meter_width(value: float | None, longest: float | None) -> int:
    """A sqrt-scaled bar width (percent), so one long step does not flatten the rest."""
    if not value or not longest or value <= 0:
        return 0
    return bucket(100 * math.sqrt(value) / math.sqrt(longest))


def humanize_metadata(metadata: Any) -> list[tuple[str, str]]:
    """``(key, value)`` pairs an operator can read; internal keys are hidden."""
    if not isinstance(metadata, dict):
        return []
    pairs = []
    for key, value in metadata.items():
        if key in INTERNAL_KEYS:
            continue
        if key in SECONDS_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
            text = human_duration(value) or str(value)
        elif (moment := parse_time(value)) is not None:
            text = moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            text = ", ".join(str(v) for v in value) or "—"
        elif isinstance(value, (dict, list)):
            text = summarize(value, 80)
        elif value is None:
            text = "—"
        else:
            text = str(value)
        pairs.append((key.replace("_", " "), text))
    return pairs


# -- step names ------------------------------------------------------------------------------------
@dataclass
class StepName:
    raw: str
    kind: str  # "durably_execute", ..., "workflow" for lifecycle markers, "step" when unknown
    name: str
    label: str
    number: int | None = None  # a repetition's or a retry marker's unix timestamp
    ref: str = ""  # a lifecycle marker's trailing segment (the failure marker's error-log id)

    @property
    def is_repetition(self) -> bool:
        return self.kind == "durably_repeat" and self.number is not None


def parse_step_name(step_name: str) -> StepName:
    """The first ``$`` segment is the kind; an empty one is a lifecycle marker. Never raises."""
    prefix, sep, rest = step_name.partition("$")
    if not sep:
        return StepName(step_name, "step", step_name, "step")
    if prefix == "":
        marker, _, tail = rest.partition("$")
        number = int(tail) if tail.isdigit() else None
        names = {
            "workflow_completion": "completed",
            "workflow_failure": "failed",
            "workflow_retry": "retried by an operator",
            "workflow_on_cancel": "on_cancel hook",
        }
        label = names.get(marker, marker)
        return StepName(step_name, "workflow", label, "workflow", number, ref=tail)
    if prefix == "durably_repeat" and "$" in rest:
        name, _, tail = rest.rpartition("$")
        if tail.isdigit():
            return StepName(step_name, "durably_repeat", name, "run", int(tail))
    return StepName(step_name, prefix, rest, KIND_LABELS.get(prefix, prefix.replace("_", " ")))


def is_failure_marker(step: StepName) -> bool:
    return step.kind == "workflow" and step.name == "failed" and bool(step.ref)


def parse_pk(value: Any, model=ErrorLog) -> Any:
    """``value`` as ``model``'s primary key (integer or UUID), or None when it cannot be one."""
    try:
        return model._meta.pk.to_python(value) if value not in (None, "") else None
    except ValidationError:
        return None


def error_order(error: ErrorLog) -> tuple:
    return (error.created, str(error.pk))


def attempts_in_words(
    kind: str, attempts: int, failed: bool, tries: StepTries | None = None
) -> tuple[str, str]:
    """(text, tone): "checked 4×" for polling kinds; "3 attempts" for the rest; hidden when 1;
    "5 attempts over 3 tries" for a step operator retries reset (``tries``)."""
    if tries is not None and tries.retried:
        return tries.summary(), "rose" if failed else "amber"
    if attempts <= 1 and not (failed and attempts):
        return "", ""
    if kind == "wait" and not failed:
        # A wait is looked at once when scheduled and once when due: the second look is not a retry.
        return "", ""
    if kind in POLLING_KINDS:
        return f"checked {attempts}×", "muted"
    word = "attempt" if attempts == 1 else "attempts"
    return f"{attempts} {word}", "rose" if failed else "amber"


# -- workflow rows ---------------------------------------------------------------------------------
def row_status(workflow: Workflow, now: datetime | None = None) -> tuple[str, str, str]:
    """(label, css tone, tooltip) of a workflow's state badge."""
    now = now or clock.now()
    state = workflow.state
    if is_stranded(workflow, now):
        age = human_duration(seconds_between(workflow.locked_at, now))
        return (
            "stranded ⚠",
            "rose",
            f"running, but its lock is {age} old (worker {workflow.locked_by})",
        )
    if state == Workflow.STATE.idle and workflow.next_run_at is not None:
        grace = overdue_grace()
        if workflow.next_run_at < now - grace:
            what = "first pass" if workflow.started_at is None else "next pass"
            return (
                "overdue",
                "amber",
                f"its {what} was due {workflow.next_run_at:%Y-%m-%d %H:%M:%S}",
            )
        if workflow.next_run_at > now:
            return "scheduled", "sky", f"next pass at {workflow.next_run_at:%Y-%m-%d %H:%M:%S}"
    if state == Workflow.STATE.idle and workflow.next_run_at is None:
        if workflow.parked_on:
            since = workflow.parked_since
            when = f" since {since:%Y-%m-%d %H:%M:%S}" if since else ""
            return "parked", "violet", f"parked on {parked_reason(workflow.parked_on)}{when}"
        return "idle ⚠", "amber", "nothing scheduled and not parked: the overdue sweep wakes it"
    tones = {
        "idle": "slate",
        "running": "sky",
        "completed": "green",
        "failed": "rose",
        "stalled": "rose",
        "cancelled": "slate",
    }
    if state == Workflow.STATE.cancelled:
        reason = workflow.cancel_reason or "cancelled (no reason given)"
        if is_on_cancel_marker(workflow.parked_on) and workflow.next_run_at is not None:
            reason += f"; on_cancel hook due {workflow.next_run_at:%Y-%m-%d %H:%M:%S}"
        return state, "slate", reason
    return state, tones.get(state, "slate"), ""


def row_duration(workflow: Workflow, now: datetime | None = None) -> float | None:
    """Running: now - started; stopped: end - started; parked idle: None."""
    now = now or clock.now()
    if workflow.started_at is None:
        return None
    if workflow.state == Workflow.STATE.running:
        return seconds_between(workflow.started_at, now)
    if workflow.state == Workflow.STATE.completed:
        return seconds_between(workflow.started_at, workflow.completed_at)
    if workflow.state == Workflow.STATE.cancelled:
        return seconds_between(workflow.started_at, workflow.cancelled_at)
    if workflow.state in BLOCKED_STATES:
        return seconds_between(workflow.started_at, workflow.modified)
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


def pending_waits_q() -> Q:
    """Pending ``continue_if`` / ``receive`` / ``wait_until`` logs (ranges of the (state,
    step_name) index)."""
    return Q(state=ExecutionLog.STATE.pending) & (
        Q(step_name__prefix=EVENT_WAIT)
        | Q(step_name__prefix=MESSAGE_WAIT)
        | Q(step_name__prefix=POLL_WAIT)
    )


def has_pending_wait() -> Exists:
    """For a Workflow queryset: the row has a pending wait (one probe of the unique index)."""
    return Exists(ExecutionLog.objects.filter(pending_waits_q(), workflow_id=OuterRef("pk")))


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
    workflow: one GROUP BY over the event waits, then one query for those logs."""
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
    for job_class, started in wanted.items():
        q |= Q(workflow__job_class=job_class, started_at=started)
    logs = (
        event_waits()
        .filter(q)
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
    query."""
    ids = list(workflow_ids)
    if not ids:
        return {}
    logs = (
        ExecutionLog.objects.filter(pending_waits_q(), workflow_id__in=ids)
        .only("id", "workflow_id", "step_name", "started_at", "metadata")
        .order_by("workflow_id", F("started_at").desc(nulls_last=True), "-id")
    )
    waits: dict[Any, WaitInfo] = {}
    for log in logs:
        if log.workflow_id not in waits:
            waits[log.workflow_id] = wait_info(log)
    return waits


# -- the workflow page -----------------------------------------------------------------------------
@dataclass
class ErrorCard:
    error: ErrorLog
    #: the operator try the attempt belongs to; None for a step never retried (no "try 1" noise)
    try_number: int | None = None

    @property
    def short_class(self) -> str:
        return short_class(self.error.error_class)


@dataclass
class TimelineRow:
    log: ExecutionLog
    step: StepName
    status: str
    tone: str
    attempts_text: str
    attempts_tone: str
    duration: float | None
    duration_text: str
    timestamp_label: str
    timestamp: datetime | None
    result: str
    metadata: list[tuple[str, str]]
    errors: list[ErrorCard] = field(default_factory=list)
    missing_error_id: str | None = None
    periodic: PeriodicTask | None = None
    current: bool = False
    meter: int = 0
    slow: bool = False
    #: attempts over operator tries, for a step a retry reset (None: one try, read as before)
    tries: StepTries | None = None

    @property
    def failed_text(self) -> str:
        """The banner's words: "failed after 2 attempts", and in which try of how many for a step
        operator retries reset ("in try 3 (6 attempts over 3 tries)")."""
        attempts = self.log.attempts
        text = f"failed after {attempts} attempt{'' if attempts == 1 else 's'}"
        if self.tries is not None and self.tries.retried:
            text += f" in try {self.tries.tries} ({self.tries.summary()})"
        return text


@dataclass
class PeriodicTask:
    name: str
    log: ExecutionLog
    iterations: int = 0
    capped: bool = False
    missed: int = 0
    skipped: int = 0
    failed: int = 0
    last_run: datetime | None = None
    next_run: datetime | None = None
    latency_avg: float | None = None
    latency_last: float | None = None

    @property
    def iterations_text(self) -> str:
        return f"{self.iterations}+" if self.capped else str(self.iterations)


@dataclass
class BranchPanel:
    log: ExecutionLog
    name: str
    sealed: bool
    merge_state: str
    polled: bool
    spawned: str
    pending: str
    never_started: str
    blocked: int
    blocked_text: str
    poll_overdue: bool
    poll: dict
    rate: float | None
    eta: str
    last_polled_at: datetime | None = None
    next_poll_at: datetime | None = None
    last_rekick_at: datetime | None = None


@dataclass
class MergePanel:
    log: ExecutionLog
    branches: list[str]
    state: str
    rate: float | None
    eta: str


def repetition_status(log: ExecutionLog) -> tuple[str, str]:
    metadata = log.metadata if isinstance(log.metadata, dict) else {}
    if metadata.get("fast_forwarded"):
        return f"caught up ×{metadata['fast_forwarded']}", "muted"
    if log.state == ExecutionLog.STATE.failed and log.error_class == "TimeoutError":
        return "tombstone", "amber"
    if log.state == ExecutionLog.STATE.completed:
        return "done", "green"
    if log.state == ExecutionLog.STATE.failed:
        return "failed", "rose"
    return log.state, "sky"


def repetition_prefix(name: str) -> str:
    return f"durably_repeat${name}$"


def repetitions_queryset(workflow_id, name: str):
    # startswith escapes % and _, and the prefix is a range scan on the (workflow, step_name) index.
    return ExecutionLog.objects.filter(
        workflow_id=workflow_id, step_name__prefix=repetition_prefix(name)
    )


def periodic_task(workflow_id, log: ExecutionLog) -> PeriodicTask:
    """Summary of one durably_repeat: reads at most REPETITION_SCAN repetitions, newest first."""
    step = parse_step_name(log.step_name)
    metadata = log.metadata if isinstance(log.metadata, dict) else {}
    task = PeriodicTask(
        name=step.name, log=log, last_run=parse_time(metadata.get("last_execution_at"))
    )
    rows = list(
        repetitions_queryset(workflow_id, step.name)
        .only("id", "step_name", "state", "started_at", "completed_at", "error_class", "metadata")
        .order_by("-step_name")[: REPETITION_SCAN + 1]
    )
    task.capped = len(rows) > REPETITION_SCAN
    rows = rows[:REPETITION_SCAN]
    latencies: list[float] = []
    for row in rows:
        row_meta = row.metadata if isinstance(row.metadata, dict) else {}
        skipped = row_meta.get("fast_forwarded")
        if skipped:
            task.missed += int(skipped)
            task.skipped += int(skipped)
            continue
        task.iterations += 1
        if row.state == ExecutionLog.STATE.failed:
            if row.error_class == "TimeoutError":
                task.missed += 1
            else:
                task.failed += 1
        elif row.state == ExecutionLog.STATE.pending:
            scheduled = parse_time(row_meta.get("scheduled_for"))
            if scheduled and (task.next_run is None or scheduled > task.next_run):
                task.next_run = scheduled
        elif row.state == ExecutionLog.STATE.completed and len(latencies) < 20:
            late = seconds_between(parse_time(row_meta.get("scheduled_for")), row.started_at)
            latencies.append(max(late, 0.0) if late is not None else 0.0)
    if task.next_run is None:
        task.next_run = parse_time(metadata.get("next_execution_at"))
    if latencies:
        task.latency_last = latencies[0]
        task.latency_avg = sum(latencies) / len(latencies)
    return task


def _merge_states(merges: list[ExecutionLog]) -> dict[str, str]:
    """branch name -> "merged" / "merging"; a completed merge wins."""
    states: dict[str, str] = {}
    for merge in merges:
        names = parse_step_name(merge.step_name).name.split(",")
        value = "merged" if merge.state == ExecutionLog.STATE.completed else "merging"
        for name in names:
            if states.get(name) != "merged":
                states[name] = value
    return states


def branch_panel(log: ExecutionLog, merge_states: dict[str, str], now: datetime) -> BranchPanel:
    name = parse_step_name(log.step_name).name
    metadata = log.metadata if isinstance(log.metadata, dict) else {}
    poll = metadata.get("poll")
    if not isinstance(poll, dict):
        poll = {}
    children = Workflow.objects.filter(parent_execution_log_id=log.pk)
    blocked = capped_count(children.filter(state__in=BLOCKED_STATES))
    if poll:
        spawned, pending, never = (
            str(poll.get(k, 0)) for k in ("spawned", "pending", "never_started")
        )
    else:  # not polled yet: live counts, capped
        spawned = show_count(capped_count(children))
        pending = show_count(capped_count(children.filter(state__in=Workflow.EXECUTABLE_STATES)))
        never = show_count(capped_count(children.filter(started_at__isnull=True)))
    next_poll = parse_time(poll.get("next_poll_at"))
    rate = poll.get("rate") if isinstance(poll.get("rate"), (int, float)) else None
    eta = poll.get("eta_seconds")
    return BranchPanel(
        log=log,
        name=name,
        sealed=bool(metadata.get("sealed") or poll.get("sealed")),
        merge_state=merge_states.get(name, "unmerged"),
        polled=bool(poll),
        spawned=spawned,
        pending=pending,
        never_started=never,
        blocked=blocked,
        blocked_text=show_count(blocked),
        poll_overdue=bool(next_poll and next_poll < now - POLL_OVERDUE),
        poll=poll,
        rate=rate,
        eta=human_duration(eta) if isinstance(eta, (int, float)) else "",
        last_polled_at=parse_time(poll.get("last_polled_at")),
        next_poll_at=next_poll,
        last_rekick_at=parse_time(poll.get("last_rekick_at")),
    )


@dataclass
class WorkflowPage:
    workflow: Workflow
    timeline: list[TimelineRow]
    timeline_capped: bool
    orphans: list[ErrorCard]
    errors_capped: bool
    periodic: list[PeriodicTask]
    branches: list[BranchPanel]
    merges: list[MergePanel]
    blocked_row: TimelineRow | None
    last_error: ErrorLog | None
    banner_error: ErrorLog | None
    divergences: list[ErrorLog]  # ReplayDivergence warnings, newest first (from the error read)
    wait: WaitInfo | None
    liveness: Liveness | None
    stranded: bool
    parent_log: ExecutionLog | None
    duration: float | None
    context_entries: list[dict]
    context_size: int
    context_limit: int
    kwargs_entries: list[dict]
    result_entries: list[dict]
    messages: list[Message] = field(default_factory=list)
    messages_capped: bool = False


#: The workflow page shows this many messages, newest first.
MESSAGE_CAP = 50


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


def _row_for(
    log: ExecutionLog,
    step: StepName,
    workflow: Workflow,
    now: datetime,
    tries: StepTries | None = None,
) -> TimelineRow:
    failed = log.state == ExecutionLog.STATE.failed
    pending = log.state == ExecutionLog.STATE.pending
    if failed:
        status, tone = "failed", "rose"
    elif pending and step.kind in WAIT_KINDS:
        status, tone = "waiting", "sky"
    elif pending:
        running = workflow.state == Workflow.STATE.running
        status, tone = (
            ("running", "sky") if running else ("retrying" if log.attempts else "pending", "amber")
        )
    else:
        status, tone = "done", "green"
    attempts_text, attempts_tone = attempts_in_words(step.kind, log.attempts, failed, tries)
    if pending:
        duration = seconds_between(log.started_at, now)
        verb = "waiting" if status == "waiting" else "running"
        duration_text = f"{verb} {human_duration(duration)}" if duration is not None else ""
        timestamp_label, timestamp = "started", log.started_at
    else:
        end = log.completed_at or log.last_executed_at or log.modified
        duration = seconds_between(log.started_at, end)
        duration_text = human_duration(duration)
        timestamp_label, timestamp = (
            ("finished", log.completed_at) if log.completed_at else ("last run", end)
        )
    result = "" if log.result is None else summarize(log.result)
    return TimelineRow(
        log=log,
        step=step,
        status=status,
        tone=tone,
        attempts_text=attempts_text,
        attempts_tone=attempts_tone,
        duration=duration,
        duration_text=duration_text,
        timestamp_label=timestamp_label,
        timestamp=timestamp,
        result=result,
        metadata=humanize_metadata(log.metadata),
        slow=bool(duration and duration >= SLOW),
        tries=tries,
    )


def _finished_step(row: TimelineRow) -> bool:
    """A step (not a lifecycle marker) that completed: its errors are history."""
    return row.step.kind != "workflow" and row.log.state == ExecutionLog.STATE.completed


def value_entries(data: Any, limit: int | None = None, text_limit: int = 200) -> list[dict]:
    """Top-level keys of a JSON dict: key, type, size, a truncated value, and a near-limit flag."""
    if not isinstance(data, dict):
        return []
    entries = []
    for key, value in data.items():
        size = json_size(value)
        pretty = json.dumps(value, indent=2, sort_keys=True, default=str)
        entries.append(
            {
                "key": key,
                "type": type(value).__name__ if value is not None else "null",
                "size": size,
                "summary": summarize(value, text_limit),
                "pretty": pretty if len(pretty) <= 20_000 else pretty[:20_000] + "\n…",
                "expandable": isinstance(value, (dict, list)) or len(pretty) > text_limit,
                "near_limit": bool(limit and size >= 0.8 * limit),
                "percent": bucket(100 * size / limit) if limit else 0,
            }
        )
    return entries


def workflow_page(workflow: Workflow) -> WorkflowPage:
    """Everything the change page shows, from a number of queries independent of the step count
    (1 timeline read, 1 error read, +1 per periodic task and per branch, +1 for a parent, +1 for
    the attempts per try of the steps an operator retry may have reset)."""
    now = clock.now()
    logs = list(
        ExecutionLog.objects.filter(workflow_id=workflow.pk)
        .exclude(step_name__regex=REPETITION_LOG_PATTERN)
        .order_by(F("started_at").asc(nulls_last=True), "id")[: TIMELINE_CAP + 1]
    )
    timeline_capped = len(logs) > TIMELINE_CAP
    logs = logs[:TIMELINE_CAP]

    errors = list(
        ErrorLog.objects.filter(workflow_id=workflow.pk)
        .defer("context")
        .order_by("-created", "-id")[: ERROR_CAP + 1]
    )
    errors_capped = len(errors) > ERROR_CAP
    errors = errors[:ERROR_CAP]
    # Keyed by the id as text: failure markers name their error as text (integer or UUID keys).
    errors_by_id = {str(error.pk): error for error in errors}
    steps = [parse_step_name(log.step_name) for log in logs]
    marker_refs = {step.ref for step in steps if is_failure_marker(step)}
    missing = [pk for pk in map(parse_pk, marker_refs - set(errors_by_id)) if pk is not None]
    if missing:  # a failure marker older than the newest ERROR_CAP errors
        older = ErrorLog.objects.filter(pk__in=missing).defer("context")
        errors_by_id.update({str(e.pk): e for e in older})

    rows: list[TimelineRow] = []
    by_step: dict[str, TimelineRow] = {}
    repeats: dict[str, TimelineRow] = {}
    periodic: list[PeriodicTask] = []
    branch_logs, merge_logs = [], []
    # Read after the timeline: only a workflow with retry markers among its steps pays for it.
    tries_by_log = step_tries(logs, retry_times(logs))
    for log, step in zip(logs, steps, strict=True):
        row = _row_for(log, step, workflow, now, tries_by_log.get(log.pk))
        rows.append(row)
        by_step[log.step_name] = row
        if step.kind == "durably_repeat":
            repeats[step.name] = row
            row.periodic = periodic_task(workflow.pk, log)
            periodic.append(row.periodic)
        elif step.kind == "branch":
            branch_logs.append(log)
        elif step.kind == "merge":
            merge_logs.append(log)

    claimed: set = set()
    for row in rows:
        if is_failure_marker(row.step):
            error = errors_by_id.get(row.step.ref)
            if error is None:
                row.missing_error_id = row.step.ref
            else:
                row.errors.append(ErrorCard(error))
                claimed.add(error.pk)
    orphans: list[ErrorCard] = []
    for error in sorted(errors_by_id.values(), key=error_order):
        if error.pk in claimed:
            continue
        owner = by_step.get(error.step_name or "")
        if owner is None and error.step_name:
            parsed = parse_step_name(error.step_name)
            if parsed.is_repetition:  # a repetition's error shows on its periodic task
                owner = repeats.get(parsed.name)
        if owner is None:
            orphans.append(ErrorCard(error))
        else:
            owner.errors.append(ErrorCard(error))
    for row in rows:
        if row.tries is not None and row.errors:
            numbers = row.tries.number_errors([card.error for card in row.errors])
            for card in row.errors:
                card.try_number = numbers.get(card.error.pk)

    longest = max((row.duration or 0 for row in rows), default=0)
    for row in rows:
        row.meter = meter_width(row.duration, longest)
    blocked_row = next((row for row in reversed(rows) if row.status == "failed"), None)
    if blocked_row is None and workflow.state in BLOCKED_STATES:
        # A completed step's error cards are history (an earlier try failed, a later one
        # succeeded): never the position a blocked run is stuck at.
        blocked_row = next(
            (row for row in reversed(rows) if row.errors and not _finished_step(row)), None
        )
    current = blocked_row or next((row for row in reversed(rows) if row.status == "waiting"), None)
    current = current or (rows[-1] if rows else None)
    if current is not None:
        current.current = True

    last_error = max(errors_by_id.values(), key=error_order, default=None)
    completed_steps = {row.log.step_name for row in rows if _finished_step(row)}
    current_error = max(
        (e for e in errors_by_id.values() if e.step_name not in completed_steps),
        key=error_order,
        default=None,
    )
    wait = None
    if workflow.state == Workflow.STATE.idle:
        pending_wait = next(
            (
                row
                for row in reversed(rows)
                if row.status == "waiting" and row.step.kind in ("wait_until", "continue_if")
            ),
            None,
        )
        if pending_wait is not None:
            metadata = (
                pending_wait.log.metadata if isinstance(pending_wait.log.metadata, dict) else {}
            )
            wait = WaitInfo(
                workflow.pk,
                "event" if pending_wait.step.kind == "continue_if" else "poll",
                str(metadata.get("condition") or pending_wait.step.name),
                pending_wait.log.started_at,
                parse_time(metadata.get("timeout_at")),
                pending_wait.log.step_name,
            )

    merge_states = _merge_states(merge_logs)
    branches = [branch_panel(log, merge_states, now) for log in branch_logs]
    merges = []
    for log in sorted(merge_logs, key=lambda m: (m.state == ExecutionLog.STATE.completed, m.pk)):
        names = parse_step_name(log.step_name).name.split(",")
        involved = [b for b in branches if b.name in names]
        rates = [b.rate for b in involved if b.rate]
        pending = sum(int(b.poll.get("pending") or 0) for b in involved if b.polled)
        rate = sum(rates) if rates else None
        eta = human_duration(pending / rate) if rate and pending else ""
        state = {"completed": "merged", "pending": "merging"}.get(log.state, log.state)
        merges.append(MergePanel(log, names, state, rate, eta))

    parent_log = None
    if workflow.parent_execution_log_id:
        parent_log = (
            ExecutionLog.objects.select_related("workflow")
            .only("id", "step_name", "workflow__id", "workflow__job_class", "workflow__key")
            .filter(pk=workflow.parent_execution_log_id)
            .first()
        )

    limit = conf.get("CONTEXT_VALUE_MAX_BYTES")
    messages, messages_capped = workflow_messages(workflow.pk)
    return WorkflowPage(
        workflow=workflow,
        timeline=rows,
        timeline_capped=timeline_capped,
        orphans=orphans,
        errors_capped=errors_capped,
        periodic=periodic,
        branches=branches,
        merges=merges,
        blocked_row=blocked_row if workflow.state in BLOCKED_STATES else None,
        last_error=last_error,
        banner_error=blocked_row.errors[-1].error
        if blocked_row and blocked_row.errors
        else current_error,
        divergences=[e for e in errors if e.error_class == DIVERGENCE_CLASS],
        wait=wait,
        liveness=liveness(
            workflow,
            merge_pending=any(log.state == ExecutionLog.STATE.pending for log in merge_logs),
            now=now,
        ),
        stranded=is_stranded(workflow, now),
        parent_log=parent_log,
        duration=row_duration(workflow, now),
        context_entries=value_entries(workflow.context, limit),
        context_size=json_size(workflow.context or {}),
        context_limit=limit,
        kwargs_entries=value_entries(workflow.kwargs),
        result_entries=value_entries({"result": workflow.result})
        if workflow.state == Workflow.STATE.completed
        else [],
        messages=messages,
        messages_capped=messages_capped,
    )
