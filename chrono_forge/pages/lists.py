"""The models of the admin's list pages besides the changelists: the overview, the stranded,
overdue and waiting workflows, a periodic task's repetitions and a branch's children. Each builder
takes what the request asked for (a cursor, a page size) and returns the page's figures and rows as
plain data, from bounded queries (``pages.queries``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from .. import conf
from ..formatting import human_duration
from ..liveness import liveness, overdue_grace, pending_merges
from ..models import ExecutionLog, Workflow
from . import queries
from .formatting import (
    SLOW,
    STATES,
    attempts_in_words,
    bucket,
    meter_width,
    parse_step_name,
    parse_time,
    row_duration,
    row_status,
    seconds_between,
    short_class,
)
from .queries import WaitInfo
from .workflow_page import BranchPanel, PeriodicTask, branch_panel, periodic_task, repetition_status

#: The Overview's counts by state stop here (shown as "100,000+").
OVERVIEW_COUNT_CAP = 100_000
#: The Overview's per-class table covers the newest this many workflows.
OVERVIEW_WINDOW = 10_000


def workflow_row(row: Workflow) -> dict:
    label, tone, tip = row_status(row)
    return {
        "workflow": row,
        "label": label,
        "tone": tone,
        "tip": tip,
        "duration": human_duration(row_duration(row)),
        "class": short_class(row.job_class),
    }


def overview() -> dict:
    """Counts by state, each capped at OVERVIEW_COUNT_CAP (one ``COUNT`` over a ``LIMIT``
    subquery per state, served by the (state, completed_at) index), and per class over the newest
    OVERVIEW_WINDOW workflows (a ``GROUP BY`` over a primary-key range): no query reads the whole
    table (the page caches the result 5 s)."""
    totals = queries.state_counts(OVERVIEW_COUNT_CAP)
    grouped, windowed = queries.newest_per_class_and_state(OVERVIEW_WINDOW)
    per_class: dict[str, dict[str, int]] = {}
    class_totals = {state: 0 for state in STATES}
    for row in grouped:
        per_class.setdefault(row["job_class"], {state: 0 for state in STATES})[row["state"]] = row[
            "n"
        ]
        class_totals[row["state"]] = class_totals.get(row["state"], 0) + row["n"]
    processed_total = class_totals["completed"]
    classes: list[dict[str, Any]] = []
    for job_class, counts in per_class.items():
        processed = counts["completed"]
        share = 100 * processed / processed_total if processed_total else 0
        classes.append(
            {
                "job_class": job_class,
                "name": short_class(job_class),
                "processed": processed,
                "in_flight": counts["idle"] + counts["running"],
                "blocked": counts["failed"] + counts["stalled"],
                "share": share,
                "share_text": (
                    "<0.01%" if 0 < share < 0.01 else f"{share:.2f}%".replace(".00%", "%")
                ),
                "share_width": bucket(share),
            }
        )
    classes.sort(key=lambda c: (-c["processed"], c["job_class"]))

    def text(*states: str) -> str:
        capped = any(totals[state] > OVERVIEW_COUNT_CAP for state in states)
        return f"{sum(totals[state] for state in states):,}{'+' if capped else ''}"

    return {
        "processed": totals["completed"],
        "in_flight": totals["idle"] + totals["running"],
        "blocked": totals["failed"] + totals["stalled"],
        "processed_text": text("completed"),
        "in_flight_text": text("idle", "running"),
        "blocked_text": text("failed", "stalled"),
        "cancelled": totals["cancelled"],
        "cancelled_text": text("cancelled"),
        "totals": totals,
        "classes": classes,
        "window": OVERVIEW_WINDOW if windowed else None,
    }


def stranded(after: Any, size: int, now: datetime) -> dict:
    """A page of stranded workflows after the id ``after`` (keyset: page N costs what page 1
    does), how long each lock is held, and a capped total."""
    rows, more = queries.stranded_page(after, size)
    total = queries.capped_count(Workflow.objects.stranded())
    ages = [seconds_between(row.locked_at, now) or 0 for row in rows]
    longest = max(ages, default=0)
    return {
        "items": [
            {"workflow": row, "age": human_duration(age), "meter": meter_width(age, longest)}
            for row, age in zip(rows, ages, strict=True)
        ],
        "total": total,
        "total_text": queries.show_count(total),
        "next_cursor": rows[-1].pk if more and rows else None,
        "stale_after": human_duration(conf.reap_stale_after().total_seconds()),
    }


def overdue(now: datetime) -> dict:
    """Exactly the rows ``resume-overdue`` would pick (the first SCAN_CAP), with why each is
    late."""
    rows, capped = queries.overdue_rows()
    merging = pending_merges(row.pk for row in rows)
    items = []
    for row in rows:
        reason = liveness(row, merge_pending=row.pk in merging, now=now)
        late = seconds_between(reason.at if reason else None, now) or 0
        items.append({"workflow": row, "reason": reason, "late": human_duration(late)})
    return {
        "items": items,
        "capped": capped,
        "cap": queries.SCAN_CAP,
        "grace": human_duration(overdue_grace().total_seconds()),
    }


def wait_item(row: Workflow, wait: WaitInfo, now: datetime, threshold: float) -> dict:
    age = wait.age(now) or 0
    over = age > threshold
    return {
        "workflow": row,
        "wait": wait,
        "age": age,
        "age_text": human_duration(age),
        "over": over,
        "meter": bucket(100 * age / threshold) if threshold else 100,
        "tone": ("rose" if wait.waits_for_event else "amber") if over else "sky",
    }


def waiting(after: Any, size: int, now: datetime, long_wait: timedelta) -> dict:
    """A page of the idle workflows waiting on an event or a condition (keyset on the id), and
    the figures above the table (stalled event waits, the oldest per class) from bounded queries
    over all of them, not from the page. ``long_wait``: past it a wait is long."""
    threshold = long_wait.total_seconds()
    idle, more = queries.waiting_page(after, size)
    waits = queries.latest_pending_waits(row.pk for row in idle)
    items = []
    for row in idle:
        wait = waits.get(row.pk)
        if wait is None:
            continue
        items.append(wait_item(row, wait, now, threshold))
    # Event waits over the threshold first (they never resume on their own), then the oldest.
    items.sort(key=lambda item: (not (item["over"] and item["wait"].waits_for_event), -item["age"]))
    stalled = queries.capped_count(queries.event_waits().filter(started_at__lt=now - long_wait))
    oldest_by_class = [
        wait_item(log.workflow, queries.wait_info(log), now, threshold)
        for log in queries.oldest_event_wait_per_class()
    ]
    oldest_by_class.sort(key=lambda i: -i["age"])
    return {
        "items": items,
        "threshold": human_duration(threshold),
        "stalled_events": stalled,
        "stalled_events_text": queries.show_count(stalled),
        "oldest_stalled": oldest_by_class[0] if stalled and oldest_by_class else None,
        "oldest_by_class": oldest_by_class,
        "next_cursor": idle[-1].pk if more and idle else None,
    }


def repetitions(workflow: Workflow, coordination: ExecutionLog, before: str, size: int) -> dict:
    """One periodic task's summary and a page of its repetitions, newest schedule first, before
    the unix time ``before`` (digits; "" for the newest)."""
    name = parse_step_name(coordination.step_name).name
    summary: PeriodicTask = periodic_task(workflow.pk, coordination)
    rows, more = queries.repetitions_page(workflow.pk, name, before, size)
    items: list[dict[str, Any]] = []
    lates: list[float] = []
    for row in rows:
        metadata = row.metadata if isinstance(row.metadata, dict) else {}
        scheduled = parse_time(metadata.get("scheduled_for"))
        step = parse_step_name(row.step_name)
        if scheduled is None and step.number is not None:
            scheduled = datetime.fromtimestamp(step.number, tz=UTC)
        status, tone = repetition_status(row)
        catch_up = bool(metadata.get("fast_forwarded"))
        late = None if catch_up else seconds_between(scheduled, row.started_at)
        if late is None and not catch_up and row.started_at and scheduled:
            late = 0.0  # started early or on time
        end = row.completed_at or (
            row.modified if row.state != ExecutionLog.STATE.pending else None
        )
        duration = None if catch_up else seconds_between(row.started_at, end)
        attempts, attempts_tone = (
            ("", "")
            if catch_up
            else attempts_in_words(
                "durably_execute", row.attempts, row.state == ExecutionLog.STATE.failed
            )
        )
        lates.append(late or 0)
        items.append(
            {
                "log": row,
                "scheduled": scheduled,
                "status": status,
                "tone": tone,
                "late": late,
                "late_text": human_duration(late) if late else "on time",
                "duration": human_duration(duration),
                "attempts": attempts,
                "attempts_tone": attempts_tone,
                "catch_up": catch_up,
                "metadata": metadata,
            }
        )
    longest = max(lates, default=0)
    for item in items:
        item["late_meter"] = meter_width(item["late"], longest)
        item["late_slow"] = bool(item["late"] and item["late"] >= SLOW)
    return {
        "workflow": workflow,
        "summary": summary,
        "items": items,
        "step": name,
        "next_cursor": rows[-1].step_name.rpartition("$")[2] if more and rows else None,
    }


def branch_children(
    workflow: Workflow, log: ExecutionLog, state: str, before: Any, size: int, now: datetime
) -> dict:
    """A branch's panel, its children's capped counts by state (the chips) and a page of its
    children in ``state`` (default: blocked when some are, else all), newest first, before the
    id ``before``."""
    panel: BranchPanel = branch_panel(log, {}, now)
    chips: list[dict[str, Any]] = []
    for value, label in (("blocked", "blocked"), *((s, s) for s in STATES), ("all", "all")):
        count = queries.children_in_state(log.pk, value) if value != "all" else None
        chips.append(
            {
                "value": value,
                "label": label,
                "count": queries.show_count(count) if count is not None else "",
            }
        )
    # Blocked children first when there are some (what an operator comes for); otherwise all
    # of them, not an empty "blocked" list.
    state = state or ("blocked" if chips[0]["count"] != "0" else "all")
    for chip in chips:
        chip["selected"] = chip["value"] == state
    rows, more = queries.children_page(log.pk, state, before, size)
    return {
        "workflow": workflow,
        "branch": panel,
        "rows": [workflow_row(row) for row in rows],
        "chips": chips,
        "state": state,
        "next_cursor": rows[-1].pk if more and rows else None,
    }
