"""How stored values read on the operator pages: durations, sizes, JSON one-liners, metadata,
step names with their labels, attempts, and a workflow row's state badge. Pure functions and plain
data: nothing here reads the database (the queries are in ``pages.queries``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import clock
from ..formatting import human_duration
from ..liveness import is_stranded, overdue_grace, parked_reason
from ..models import Workflow
from ..step_names import is_on_cancel_marker
from ..tries import POLLING_KINDS, StepTries

#: Steps this long get the "slow" (amber) colour.
SLOW = 60

#: Metadata keys that mean nothing to an operator (ids and the poller's bookkeeping).
INTERNAL_KEYS = frozenset({"error_log_id", "poll", "poll_token", "cursors", "parent_id"})
#: Metadata keys holding a number of seconds.
SECONDS_KEYS = frozenset(
    {"every", "timeout", "check_interval", "min_interval", "max_interval", "eta_seconds"}
)

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
