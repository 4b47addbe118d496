"""The merge poller: one lightweight django-q2 task (``tasks.poll_merge``) per pending merge.

The parent parks at ``merge_branches`` with nothing scheduled; this task watches its branches
instead of replaying the parent. Each poll costs a handful of statements whatever the number of
children:

    1 SELECT of the merge log (and its parent's job_class/key)  ->  a superseded poller (stale
      token) or a resolved merge stops here
    1 SELECT of the merge's branch logs (named by the merge log's step name)
    1 grouped COUNT over the incomplete children, on the (parent_execution_log, state) index
    (once per branch, when first seen sealed: 1 COUNT of all its children = "spawned")
    (only when some never-started child may have been lost: 1 SELECT ... LIMIT 200 to rekick)
    1 transaction: lock the branch logs, re-check the token, write ``metadata["poll"]``, and enqueue
      the next poll, or the parent's wake-up, or rekicked children

Cadence: when the branches drained since the last poll, the next poll comes at half the ETA (pending
/ drain rate), clamped to [min_interval, max_interval]; with no drain: ``min_interval`` while a
child is running, exponential back-off from ``min_interval`` while only never-started children are
left, ``max_interval`` when nothing can progress (only waiting, failed or stalled children).

Rekick: a child that is idle and never started (``started_at`` NULL) and untouched for
``CHILD_REKICK_AFTER`` lost its delivery (Redis is at-most-once; an ORM-broker row can be deleted by
hand). Up to REKICK_BATCH of them are enqueued again per poll, and only when the branch's
never-started count did not drop since the last poll (a dropping count means the queue is just
backlogged). The rekick touches ``modified`` so the next poll does not rekick the same child again.
(Children are born with a due time too, so the overdue sweep finds them without a poller.)

The parent's due time: every reschedule also moves the parked parent's ``next_run_at`` to the next
poll's due time (one UPDATE in the poll's transaction), and the wake-up is recorded on the parent
row (:meth:`Workflow.wake`). A poller lost before or after any poll leaves the parent overdue: the
overdue sweep replays it, and the replayed merge re-arms a poller with a new token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Count, Q

from . import clock, conf, dispatch, step_names
from .models import ExecutionLog, Workflow
from .primitives.merge import INCOMPLETE_STATES, schedule_poll
from .steps import COMPLETED, PENDING

logger = logging.getLogger("chrono_forge")

REKICK_BATCH = 200
ETA_FRACTION = 0.5
#: Transient database errors (deadlock, lost connection, lock timeout, "database is locked") make
#: the poller reschedule itself with polynomial back-off, up to this many attempts.
TRANSIENT_ATTEMPTS = 25
TRANSIENT_ERRORS = (OperationalError, InterfaceError)

#: What a poll reads of the merge log and of each branch log.
LOG_COLUMNS = ("id", "workflow_id", "step_name", "state", "metadata")

STATE = Workflow.STATE
#: Children that hold the merge until an operator acts (a cancelled child too: retry it with
#: resume_cancelled, or cancel the parent).
BLOCKED_STATES = (STATE.failed, STATE.stalled, STATE.cancelled)


@dataclass
class Counts:
    """The incomplete children of one branch (``completed`` is the only done state)."""

    pending: int = 0  # incomplete: idle, running, failed or stalled
    never_started: int = 0  # idle with started_at NULL (queued, or their delivery was lost)
    running: int = 0
    blocked: int = 0  # failed or stalled: only an operator's retry moves them

    @property
    def waiting(self) -> int:
        """Idle children that already ran a pass and are parked (a wait, a continue_if, a merge)."""
        return self.pending - self.never_started - self.running - self.blocked

    @property
    def progressing(self) -> int:
        """Children that will finish without anyone's help soon: running or not yet started."""
        return self.running + self.never_started


def count_children(branch_log_ids: list[Any]) -> dict[Any, Counts]:
    """Counts per branch log, in one grouped query over the incomplete children only."""
    counts = {pk: Counts() for pk in branch_log_ids}
    rows = (
        Workflow.objects.filter(
            parent_execution_log_id__in=branch_log_ids, state__in=INCOMPLETE_STATES
        )
        .values("parent_execution_log_id")
        .annotate(
            pending=Count("id"),
            never_started=Count("id", filter=Q(state=STATE.idle, started_at__isnull=True)),
            running=Count("id", filter=Q(state=STATE.running)),
            blocked=Count("id", filter=Q(state__in=BLOCKED_STATES)),
        )
        .order_by()
    )
    for row in rows:
        branch_log_id = row.pop("parent_execution_log_id")
        counts[branch_log_id] = Counts(**row)
    return counts


def next_delay(
    *,
    pending: int,
    running: int,
    never_started: int,
    rate: float | None,
    previous: float | None,
    low: float,
    high: float,
    sealed: bool = True,
) -> float:
    """Seconds until the next poll (see the module docstring)."""

    def clamp(seconds: float) -> float:
        return min(max(seconds, low), high)

    if not sealed:
        return low
    if pending and rate:
        return clamp(pending / rate * ETA_FRACTION)
    if running:
        return low
    if never_started:
        return low if previous is None else clamp(previous * 2)
    return high


def transient_backoff(attempt: int) -> float:
    """Polynomial back-off (seconds) before retry number ``attempt`` after a transient DB error."""
    return float(attempt**4 + 2)


def poll(merge_log_id: Any, token: str, *, attempt: int = 0) -> str:
    """One poll of the pending merge whose step log is ``merge_log_id``, armed with ``token``.

    The merge log holds the rest: its workflow (the parent), its branch names and its intervals.
    Returns what it did: ``"woke"``, ``"rescheduled"``, ``"superseded"``, ``"merged"``, ``"gone"``,
    ``"cancelled"`` (the parent was cancelled: polling stops) or ``"retrying"``.
    """
    try:
        return _poll(merge_log_id, token)
    except TRANSIENT_ERRORS as error:
        if attempt + 1 >= TRANSIENT_ATTEMPTS:
            raise
        delay = transient_backoff(attempt + 1)
        logger.warning(
            "chrono_forge: merge poller of merge log %s hit %s: %s; retrying in %gs (attempt %d)",
            merge_log_id,
            type(error).__name__,
            error,
            delay,
            attempt + 1,
        )
        run_at = clock.now() + timedelta(seconds=delay)
        schedule_poll(merge_log_id, token, run_at=run_at, attempt=attempt + 1)
        return "retrying"


def poll_legacy_payload(
    job_class: str,
    key: str,
    branch_log_ids: list[Any],
    token: str,
    min_interval: float = 5.0,
    max_interval: float = 300.0,
    *,
    merge_log_id: Any = None,
    attempt: int = 0,
) -> str:
    """A poll queued by an earlier version, whose payload named the parent and its branch logs:
    the same poll, found through the merge log (the intervals stored on it are the same)."""
    if merge_log_id is None:  # the oldest payloads: the parent's pending merge armed with token
        merge_log_id = next(
            (
                log.pk
                for log in ExecutionLog.objects.filter(
                    workflow__job_class=job_class,
                    workflow__key=key,
                    step_name__startswith=step_names.kind_prefix("merge"),
                    state=PENDING,
                ).only("id", "metadata")
                if (log.metadata or {}).get("poll_token") == token
            ),
            None,
        )
        if merge_log_id is None:
            logger.info(
                "chrono_forge: merge poller for %s(%s) was superseded; exiting", job_class, key
            )
            return "superseded"
    return poll(merge_log_id, token, attempt=attempt)


def _poll(merge_log_id: Any, token: str) -> str:
    now = clock.now()
    merge_log = (
        ExecutionLog.objects.filter(pk=merge_log_id)
        .select_related("workflow")
        .only(*LOG_COLUMNS, "workflow__job_class", "workflow__key", "workflow__state")
        .first()
    )
    if merge_log is None:
        logger.warning("chrono_forge: merge poller: merge log %s is gone; stopping", merge_log_id)
        return "gone"
    job_class, key = merge_log.workflow.job_class, merge_log.workflow.key
    if merge_log.state == COMPLETED:
        return "merged"  # the parent resolved the merge itself
    if merge_log.workflow.state == STATE.cancelled:
        logger.info(
            "chrono_forge: merge poller for %s(%s): the parent was cancelled", job_class, key
        )
        return "cancelled"  # nothing will replay the parent: stop polling
    if _token(merge_log) != token:
        logger.info("chrono_forge: merge poller for %s(%s) was superseded; exiting", job_class, key)
        return "superseded"
    metadata = merge_log.metadata or {}
    low = float(metadata.get("min_interval") or 5.0)
    high = float(metadata.get("max_interval") or 300.0)
    names = [
        step_names.StepName("branch", name).format()
        for name in step_names.merge_branches(merge_log.step_name) or ()
    ]
    found = {
        log.step_name: log
        for log in ExecutionLog.objects.filter(
            workflow_id=merge_log.workflow_id, step_name__in=names
        ).only(*LOG_COLUMNS)
    }
    missing = [name for name in names if name not in found]
    if missing or not names:
        logger.warning(
            "chrono_forge: merge poller for %s(%s): branch log(s) %s are gone; stopping",
            job_class,
            key,
            missing,
        )
        return "gone"
    branch_logs = [found[name] for name in names]
    if any(_token(log) != token for log in branch_logs):
        logger.info("chrono_forge: merge poller for %s(%s) was superseded; exiting", job_class, key)
        return "superseded"

    pks = [log.pk for log in branch_logs]  # as the database returns them (ids may be str)
    counts = count_children(pks)
    sealed = {log.pk: log.state == COMPLETED for log in branch_logs}
    spawned = _spawned_once(branch_logs, sealed)

    previous = {log.pk: (log.metadata or {}).get("poll") or {} for log in branch_logs}
    rates = {pk: _rate(previous[pk], counts[pk].pending, now) for pk in pks}
    total = Counts(
        *(sum(getattr(c, f) for c in counts.values()) for f in Counts.__dataclass_fields__)
    )
    all_sealed = all(sealed.values())

    outcome, delay = "rescheduled", None
    rekick: list[tuple[Any, Any, str, str]] = []
    if all_sealed and total.pending == 0:
        # Safe even while the parent still holds its lock (it is parking right now): the executor
        # flags the losing delivery and the holder publishes a continuation when it releases.
        outcome = "woke"
    else:
        rekick = _stale_never_started(counts, previous, now)
        rate = sum(r for r in rates.values() if r) or None
        delay = next_delay(
            pending=total.pending,
            running=total.running,
            never_started=total.never_started,
            rate=rate,
            previous=_previous_delay(previous[pks[0]]),
            low=low,
            high=high,
            sealed=all_sealed,
        )
    next_poll_at = now + timedelta(seconds=delay) if delay is not None else None

    with transaction.atomic(using=conf.database()):
        locked = {
            log.pk: log
            for log in ExecutionLog.objects.select_for_update()
            .filter(pk__in=pks)
            .only("id", "metadata")
        }
        if len(locked) != len(pks) or any(_token(log) != token for log in locked.values()):
            return "superseded"  # re-armed while we counted: the new poller owns the merge now
        kicked_by_branch: dict[Any, int] = {}
        for _, parent_log, _, _ in rekick:
            kicked_by_branch[parent_log] = kicked_by_branch.get(parent_log, 0) + 1
        for pk in pks:
            metadata = locked[pk].metadata or {}
            before = metadata.get("poll") or {}
            kicked = kicked_by_branch.get(pk, 0)
            rate, pending = rates[pk], counts[pk].pending
            poll_state = {
                "pending": pending,
                "spawned": before.get("spawned")
                if before.get("spawned") is not None
                else spawned.get(pk),
                "never_started": counts[pk].never_started,
                "running": counts[pk].running,
                "blocked": counts[pk].blocked,
                "sealed": sealed[pk],
                "last_polled_at": now.isoformat(),
                "next_poll_at": next_poll_at.isoformat() if next_poll_at else None,
                "polls": before.get("polls", 0) + 1,
                "rekicked": kicked,
                "rekick_total": before.get("rekick_total", 0) + kicked,
                "last_rekick_at": now.isoformat() if kicked else before.get("last_rekick_at"),
                "rate": rate,
                "eta_seconds": pending / rate if rate else None,
            }
            ExecutionLog.objects.filter(pk=pk).update(
                metadata={**metadata, "poll": poll_state}, modified=now
            )
        if rekick:
            Workflow.objects.filter(pk__in=[row[0] for row in rekick]).update(modified=now)
            dispatch.enqueue_many([(row[2], row[3]) for row in rekick])
            logger.warning(
                "chrono_forge: merge poller for %s(%s) re-enqueued %d never-started child(ren)",
                job_class,
                key,
                len(rekick),
            )
        parent = Workflow.objects.filter(job_class=job_class, key=key)
        if outcome == "woke":
            parent.record_wake(now)
            dispatch.enqueue(job_class, key)
        elif next_poll_at is not None:
            # The parked parent is due when the next poll is: lost, that poll makes it overdue.
            parent.filter(state=STATE.idle).update(next_run_at=next_poll_at)
            schedule_poll(merge_log_id, token, run_at=next_poll_at)
    return outcome


def _token(log: ExecutionLog) -> Any:
    return (log.metadata or {}).get("poll_token")


def _spawned_once(branch_logs: list[ExecutionLog], sealed: dict[Any, bool]) -> dict[Any, int]:
    """Children per branch, counted once: the first time a poll sees the branch sealed."""
    need = [
        log.pk
        for log in branch_logs
        if sealed[log.pk] and ((log.metadata or {}).get("poll") or {}).get("spawned") is None
    ]
    if not need:
        return {}
    found = dict(
        Workflow.objects.filter(parent_execution_log_id__in=need)
        .values("parent_execution_log_id")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("parent_execution_log_id", "n")
    )
    return {pk: found.get(pk, 0) for pk in need}


def _rate(previous: dict[str, Any], pending: int, now: datetime) -> float | None:
    """Children completed per second since the previous poll (None before a second sample)."""
    last, before = previous.get("last_polled_at"), previous.get("pending")
    if last is None or before is None:
        return None
    elapsed = (now - datetime.fromisoformat(last)).total_seconds()
    if elapsed <= 0:
        return None
    return max(0.0, (before - pending) / elapsed)


def _previous_delay(previous: dict[str, Any]) -> float | None:
    last, planned = previous.get("last_polled_at"), previous.get("next_poll_at")
    if last is None or planned is None:
        return None
    return (datetime.fromisoformat(planned) - datetime.fromisoformat(last)).total_seconds()


def _stale_never_started(
    counts: dict[Any, Counts], previous: dict[Any, dict], now: datetime
) -> list[tuple[Any, Any, str, str]]:
    """Children to re-enqueue: idle, never started, untouched for CHILD_REKICK_AFTER, in branches
    whose never-started count did not drop since the last poll; at most REKICK_BATCH."""
    eligible = [
        pk
        for pk, c in counts.items()
        if c.never_started
        and (
            previous[pk].get("never_started") is None
            or c.never_started >= previous[pk]["never_started"]
        )
    ]
    if not eligible:
        return []
    return list(
        Workflow.objects.filter(
            parent_execution_log_id__in=eligible,
            state=STATE.idle,
            started_at__isnull=True,
            modified__lt=now - conf.as_timedelta(conf.get("CHILD_REKICK_AFTER")),
        )
        .order_by("pk")
        .values_list("pk", "parent_execution_log_id", "job_class", "key")[:REKICK_BATCH]
    )
