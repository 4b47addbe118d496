"""Checks of the task payloads that reach chrono_forge's entry points (:mod:`chrono_forge.tasks`).

A queue row can hold anything: a payload chrono_forge never wrote (a hand-made row, a task of an
older version, a hostile one) must be refused before it touches the database or imports anything,
with one clear reason. Each check raises :class:`PayloadError`; the task logs it on one line and
returns, so django-q2 records a finished task and never redelivers it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings

from .telemetry import CARRIER_MAX_ENTRIES, CARRIER_MAX_LENGTH
from .validation import KEY_MAX_LENGTH

#: ``Workflow.job_class`` holds at most this many characters.
JOB_CLASS_MAX_LENGTH = 255
#: A continuation's token is the ISO format of its due time (``executor.token_for``).
TOKEN_MAX_LENGTH = 64
#: Attempt numbers and retry counters stay far below this.
COUNT_MAX = 1_000_000
#: Per-error retry counters a workflow-level retry carries; a policy has a handful of entries.
RETRY_COUNTS_MAX_ENTRIES = 100
#: A merge's step name (at most 255 characters, names joined by ",") names fewer branches.
BRANCH_IDS_MAX = 255
PK_MAX_LENGTH = 64
#: Poll intervals and lock ages stay far below the datetime range (year 9999).
SECONDS_MAX = 1e10


class PayloadError(ValueError):
    """A task payload that chrono_forge cannot have written."""


def preview(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one bounded log line."""
    try:
        text = repr(value)
    except Exception as error:  # a payload object whose repr fails must not break the refusal
        text = f"<unprintable {type(value).__name__}: {type(error).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


_short = preview


def job_class(value: Any) -> str:
    """A dotted path of Python identifiers (looked up in the registry later, never imported)."""
    if not isinstance(value, str):
        raise PayloadError(f"job_class must be a str, got {type(value).__name__} {_short(value)}")
    if len(value) > JOB_CLASS_MAX_LENGTH:
        raise PayloadError(
            f"job_class is {len(value)} characters, longer than any stored class path "
            f"({JOB_CLASS_MAX_LENGTH}): {_short(value)}"
        )
    parts = value.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise PayloadError(f"job_class {_short(value)} is not a dotted path (module.Class)")
    return value


def key(value: Any) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"key must be a str, got {type(value).__name__} {_short(value)}")
    if not value or len(value) > KEY_MAX_LENGTH or "\x00" in value:
        raise PayloadError(
            f"key {_short(value)} is not a workflow key (1 to {KEY_MAX_LENGTH} characters, no NUL)"
        )
    return value


def count(value: Any, what: str = "attempt") -> int:
    """An int in [0, COUNT_MAX] (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= COUNT_MAX:
        raise PayloadError(f"{what} must be an int in [0, {COUNT_MAX}], got {_short(value)}")
    return value


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise PayloadError(f"{what} must be a bool, got {_short(value)}")
    return value


def retry_counts(value: Any) -> dict[str, int] | None:
    """None, or a small dict of str -> int >= 0."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > RETRY_COUNTS_MAX_ENTRIES:
        raise PayloadError(
            f"retry_counts must be None or a dict of at most {RETRY_COUNTS_MAX_ENTRIES} "
            f"str -> int entries, got {_short(value)}"
        )
    for name, number in value.items():
        if not isinstance(name, str) or len(name) > JOB_CLASS_MAX_LENGTH:
            raise PayloadError(f"retry_counts has a key that is not a short str: {_short(name)}")
        count(number, f"retry_counts[{name!r}]")
    return value


def token(value: Any) -> str | None:
    """None, or the ISO due time a continuation carries (aware exactly when ``USE_TZ`` is on, so it
    compares with ``next_run_at``)."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= TOKEN_MAX_LENGTH:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and (parsed.tzinfo is not None) == bool(settings.USE_TZ):
            return value
    raise PayloadError(f"token must be None or an ISO due time, got {_short(value)}")


def name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > JOB_CLASS_MAX_LENGTH:
        raise PayloadError(f"{what} must be a non-empty short str, got {_short(value)}")
    return value


def seconds(value: Any, what: str) -> float:
    """A finite number of seconds > 0 (not a bool)."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
        or value > SECONDS_MAX
    ):
        raise PayloadError(
            f"{what} must be a number of seconds in (0, {SECONDS_MAX:g}], got {_short(value)}"
        )
    return float(value)


def json_pk(value: Any) -> Any:
    """A primary key as JSON holds it (in a payload or a step's metadata): an int stays an int, a
    UUID key becomes its text (``json`` cannot encode a UUID); the key field reads either back."""
    return value if value is None or isinstance(value, (int, str)) else str(value)


def pk(value: Any, what: str) -> Any:
    """A primary key as chrono_forge puts it in a payload: an int, or a str (UUID keys)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PayloadError(f"{what} must be an int or str primary key, got {_short(value)}")
    if isinstance(value, str) and not (0 < len(value) <= PK_MAX_LENGTH):
        raise PayloadError(f"{what} is not a primary key: {_short(value)}")
    return value


def pk_list(value: Any) -> list[Any]:
    if not isinstance(value, list) or not 0 < len(value) <= BRANCH_IDS_MAX:
        raise PayloadError(
            f"branch_log_ids must be a list of 1 to {BRANCH_IDS_MAX} primary keys, got "
            f"{_short(value)}"
        )
    return [pk(item, "branch_log_ids item") for item in value]


def trace_context(value: Any) -> dict[str, str] | None:
    """None, or an OpenTelemetry carrier: a small short str -> str dict (``traceparent``, ...)."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not value
        or len(value) > CARRIER_MAX_ENTRIES
        or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and 0 < len(k) <= CARRIER_MAX_LENGTH
            and len(v) <= CARRIER_MAX_LENGTH
            for k, v in value.items()
        )
    ):
        raise PayloadError(
            f"trace_context must be None or a dict of 1 to {CARRIER_MAX_ENTRIES} str -> str "
            f"entries of at most {CARRIER_MAX_LENGTH} characters, got {_short(value)}"
        )
    return value


Check = Callable[[Any], Any]


def parse(
    task: str,
    args: tuple,
    kwargs: dict[str, Any],
    positional: list[tuple[str, Check]],
    optional: dict[str, Check],
) -> dict[str, Any]:
    """Bind ``args``/``kwargs`` to the parameters of ``task`` and check each one given.

    ``positional`` are required and may come by position or by name; ``optional`` may come by name
    (or by position after the required ones). Anything else is refused. Returns the given arguments
    by name (an optional one not given is left out: the task's default applies).
    """
    order = [name for name, _ in positional] + list(optional)
    if len(args) > len(order):
        raise PayloadError(f"{task}: takes at most {len(order)} arguments, got {len(args)}")
    bound = dict(zip(order, args, strict=False))
    twice = sorted(set(bound).intersection(kwargs))
    if twice:
        raise PayloadError(f"{task}: argument(s) given twice: {_short(twice)}")
    unknown = sorted(set(kwargs) - set(order))
    if unknown:
        raise PayloadError(f"{task}: unknown argument(s): {_short(unknown)}")
    bound.update(kwargs)
    checks = dict(positional) | optional
    missing = [name for name, _ in positional if name not in bound]
    if missing:
        raise PayloadError(f"{task}: missing argument(s) {_short(missing)}")
    return {name: checks[name](value) for name, value in bound.items()}


#: ``run_workflow(job_class, key, **internal)``: chrono_forge's own continuation arguments.
PASS_ARGUMENTS: dict[str, Check] = {
    "attempt": count,
    "retry_counts": retry_counts,
    "retry_workflow": lambda v: flag(v, "retry_workflow"),
    "resume_cancelled": lambda v: flag(v, "resume_cancelled"),  # a forced retry of a cancelled run
    "token": token,
    "wait_condition": lambda v: name(v, "wait_condition"),
    "stale_after": lambda v: seconds(v, "stale_after"),  # a reaper's lock age
    "trace_context": trace_context,  # the enqueuer's OpenTelemetry context (chrono_forge.telemetry)
}


def run_workflow(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    return parse(
        "run_workflow", args, kwargs, [("job_class", job_class), ("key", key)], PASS_ARGUMENTS
    )


def poll_merge(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``poll_merge(merge_log_id, token, *, attempt=0)``: the merge log holds everything else.

    The payload of earlier versions, ``poll_merge(job_class, key, branch_log_ids, token,
    min_interval, max_interval, *, merge_log_id=None, attempt=0)``, may still sit in a queue after
    an upgrade: it is checked as before and returned with ``legacy=True``."""
    if len(args) > 2 or "job_class" in kwargs:
        return {**_legacy_poll_merge(args, kwargs), "legacy": True}
    return parse(
        "poll_merge",
        args,
        kwargs,
        [("merge_log_id", lambda v: pk(v, "merge_log_id")), ("token", lambda v: name(v, "token"))],
        {"attempt": count},
    )


def _legacy_poll_merge(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    checked = parse(
        "poll_merge",
        args,
        kwargs,
        [
            ("job_class", job_class),
            ("key", key),
            ("branch_log_ids", pk_list),
            ("token", lambda v: name(v, "token")),
        ],
        {
            "min_interval": lambda v: seconds(v, "min_interval"),
            "max_interval": lambda v: seconds(v, "max_interval"),
            "merge_log_id": lambda v: None if v is None else pk(v, "merge_log_id"),
            "attempt": count,
        },
    )
    low, high = checked.get("min_interval"), checked.get("max_interval")
    if low is not None and high is not None and low > high:
        raise PayloadError(f"poll_merge: min_interval ({low:g}) exceeds max_interval ({high:g})")
    return checked
