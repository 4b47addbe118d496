"""The workflow page's model: its timeline, the errors each step owns, the banners (where a blocked
run is stuck, what it waits for), periodic tasks, branches and merges. Plain data built from a
number of queries independent of the step count; the admin's change page and the command's
``show`` both render it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import clock, conf
from ..exceptions import ReplayDivergence
from ..formatting import human_duration
from ..liveness import Liveness, is_stranded, liveness
from ..models import ErrorLog, ExecutionLog, Message, Workflow
from ..tries import StepTries, retry_times, step_tries
from . import queries
from .formatting import (
    BLOCKED_STATES,
    SLOW,
    WAIT_KINDS,
    StepName,
    attempts_in_words,
    humanize_metadata,
    is_failure_marker,
    json_size,
    meter_width,
    parse_step_name,
    parse_time,
    row_duration,
    seconds_between,
    short_class,
    summarize,
    value_entries,
)
from .queries import WaitInfo

#: A branch poll is overdue when its next poll is this far in the past.
POLL_OVERDUE = timedelta(seconds=120)

#: ErrorLog.error_class of a replay-divergence warning.
DIVERGENCE_CLASS = f"{ReplayDivergence.__module__}.{ReplayDivergence.__qualname__}"


def error_order(error: ErrorLog) -> tuple:
    return (error.created, str(error.pk))


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


def periodic_task(workflow_id, log: ExecutionLog) -> PeriodicTask:
    """Summary of one durably_repeat: reads at most REPETITION_SCAN repetitions, newest first."""
    step = parse_step_name(log.step_name)
    metadata = log.metadata if isinstance(log.metadata, dict) else {}
    task = PeriodicTask(
        name=step.name, log=log, last_run=parse_time(metadata.get("last_execution_at"))
    )
    rows, task.capped = queries.newest_repetitions(workflow_id, step.name)
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
    blocked = queries.blocked_children(log.pk)
    if poll:
        spawned, pending, never = (
            str(poll.get(k, 0)) for k in ("spawned", "pending", "never_started")
        )
    else:  # not polled yet: live counts, capped
        spawned, pending, never = map(queries.show_count, queries.live_child_counts(log.pk))
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
        blocked_text=queries.show_count(blocked),
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


def workflow_page(workflow: Workflow) -> WorkflowPage:
    """Everything the change page shows, from a number of queries independent of the step count
    (1 timeline read, 1 error read, +1 per periodic task and per branch, +1 for a parent, +1 for
    the attempts per try of the steps an operator retry may have reset)."""
    now = clock.now()
    logs, timeline_capped = queries.timeline_logs(workflow.pk)
    errors, errors_capped = queries.newest_errors(workflow.pk)
    # Keyed by the id as text: failure markers name their error as text (integer or UUID keys).
    errors_by_id = {str(error.pk): error for error in errors}
    steps = [parse_step_name(log.step_name) for log in logs]
    marker_refs = {step.ref for step in steps if is_failure_marker(step)}
    missing = [
        pk for pk in map(queries.parse_pk, marker_refs - set(errors_by_id)) if pk is not None
    ]
    if missing:  # a failure marker older than the newest ERROR_CAP errors
        errors_by_id.update({str(e.pk): e for e in queries.errors_by_pk(missing)})

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
        parent_log = queries.parent_log(workflow.parent_execution_log_id)

    limit = conf.get("CONTEXT_VALUE_MAX_BYTES")
    messages, messages_capped = queries.workflow_messages(workflow.pk)
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
