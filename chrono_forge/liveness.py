"""Why an unfinished workflow is waiting, in the terms of the four states (running, scheduled,
parked on an event, blocked). Shared by the admin pages and the ``chrono_forge`` command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from . import clock, conf
from .models import ExecutionLog, Workflow
from .step_names import MalformedStepName, StepName, is_on_cancel_marker

BLOCKED_STATES = (Workflow.STATE.failed, Workflow.STATE.stalled)


def overdue_grace() -> timedelta:
    return conf.as_timedelta(conf.get("RESUME_OVERDUE_GRACE"))


@dataclass
class Liveness:
    """Why an unfinished workflow is waiting, in the terms of the four states: ``text`` is followed
    by the moment ``at`` on the page ("first pass not started since <at>")."""

    # "scheduled", "first_pass", "merge_poll", "parked", "retry", "on_cancel", "unaccounted"
    kind: str
    text: str
    at: datetime | None
    overdue: bool

    @property
    def tone(self) -> str:
        return "amber" if self.overdue or self.kind == "unaccounted" else "sky"


def liveness(
    workflow: Workflow, *, merge_pending: bool = False, now: datetime | None = None
) -> Liveness | None:
    """The waiting reason of an idle workflow, of a blocked one with a pending operator retry, or
    of a cancelled one with its on_cancel hook or a forced retry due (None otherwise).
    ``merge_pending``: the workflow has a pending merge (its due time is the merge poll's).
    ``overdue`` matches ``Workflow.objects.overdue()`` with the default grace."""
    now = now or clock.now()
    cutoff = now - overdue_grace()
    due = workflow.next_run_at
    if workflow.state in BLOCKED_STATES:
        if due is None:
            return None
        return Liveness("retry", "operator retry requested, not started since", due, due < cutoff)
    if workflow.state == Workflow.STATE.cancelled:
        if due is None:
            return None
        if is_on_cancel_marker(workflow.parked_on):
            return Liveness("on_cancel", "on_cancel hook due", due, due < cutoff)
        return Liveness("retry", "forced retry requested, not started since", due, due < cutoff)
    if workflow.state != Workflow.STATE.idle:
        return None
    if due is None:
        if workflow.parked_on:
            text = f"parked on {parked_reason(workflow.parked_on)} since"
            return Liveness("parked", text, workflow.parked_since, False)
        late = workflow.modified is not None and workflow.modified < cutoff
        return Liveness(
            "unaccounted",
            "nothing scheduled and not parked (the overdue sweep wakes it); untouched since",
            workflow.modified,
            late,
        )
    overdue = due < cutoff
    if workflow.started_at is None:
        return Liveness("first_pass", "first pass not started since", due, overdue)
    if merge_pending:
        text = "merge poll overdue: it was due" if overdue else "merge poll due"
        return Liveness("merge_poll", text, due, overdue)
    if overdue:
        return Liveness("scheduled", "overdue: the next pass was due", due, True)
    return Liveness("scheduled", "scheduled for", due, False)


def parked_reason(parked_on: str) -> str:
    """What a parked run waits for: ``message <topic>`` for a receive (its step's name, which is
    the topic unless ``name=`` was given), else ``event <step>``."""
    try:
        parsed = StepName.parse(parked_on)
    except MalformedStepName:
        return f"event {parked_on}"
    if parsed.kind == "receive":
        return f"message {parsed.name}"
    return f"event {parked_on}"


def pending_merges(workflow_ids) -> set:
    """The ids among ``workflow_ids`` with a pending merge (one query)."""
    ids = list(workflow_ids)
    if not ids:
        return set()
    return set(
        ExecutionLog.objects.filter(
            workflow_id__in=ids, state=ExecutionLog.STATE.pending, step_name__prefix="merge$"
        ).values_list("workflow_id", flat=True)
    )


def is_stranded(workflow: Workflow, now: datetime | None = None) -> bool:
    """Running with a lock older than REAP_STALE_AFTER (what ``reap`` picks)."""
    now = now or clock.now()
    return (
        workflow.state == Workflow.STATE.running
        and workflow.locked_at is not None
        and workflow.locked_at < now - conf.reap_stale_after()
    )
