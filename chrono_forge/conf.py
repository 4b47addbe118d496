"""Settings: one accessor over the optional ``CHRONO_FORGE`` dict.

Values are read on every call so ``override_settings`` and run-time changes take effect; the system
checks in :mod:`chrono_forge.checks` validate them at start-up.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    "MAX_DURATION": timedelta(minutes=10),
    "REAP_STALE_AFTER": None,  # None: 3 x MAX_DURATION
    "RESUME_OVERDUE_GRACE": timedelta(minutes=5),
    "DISPATCHER": "chrono_forge.dispatch.django_q.DjangoQDispatcher",
    "CLUSTER": None,  # django-q2 cluster (queue) for workflow continuations; None: Q_CLUSTER's
    "BRANCH_MERGE_CLUSTER": None,
    "MAINTENANCE_CLUSTER": None,
    "DATABASE": "default",
    "CONTEXT_VALUE_MAX_BYTES": 16 * 1024,
    "CONTEXT_MAX_BYTES": 256 * 1024,  # the whole context, serialised
    "CONTEXT_KEY_MAX_LENGTH": 255,  # characters
    "KWARGS_MAX_BYTES": 64 * 1024,  # a workflow's kwargs and options together, as JSON
    "RESULT_MAX_BYTES": 64 * 1024,
    "MESSAGE_MAX_BYTES": 64 * 1024,  # a message's payload, as JSON
    "ERROR_CONTEXT_MAX_BYTES": 64 * 1024,
    "ERROR_MESSAGE_MAX_CHARS": 10_000,  # longer error messages are stored truncated
    "ERROR_BACKTRACE_MAX_CHARS": 100_000,  # and longer tracebacks too
    "TASK_TIMEOUT": None,  # django-q2 per-task timeout for passes; None: Q_CLUSTER's
    "CHILD_REKICK_AFTER": timedelta(minutes=5),  # the merge poller re-sends a child's lost delivery
    "ADMIN_LONG_WAIT_THRESHOLD": timedelta(hours=1),  # the admin's waiting page flags longer
    "PRIMARY_KEY_FIELD": None,  # None: settings.DEFAULT_AUTO_FIELD
    "TASKS_BACKEND": "default",  # the TASKS alias of the Django Tasks dispatcher
    "WORKFLOW_MODULES": (),  # modules to import at start-up besides every app's `workflows`
    "REPLAY_DIVERGENCE": "warn",  # a replay that no longer matches its history: "warn" or "stall"
}

#: The choices of REPLAY_DIVERGENCE.
REPLAY_DIVERGENCE_MODES = ("warn", "stall")

DURATION_SETTINGS = (
    "MAX_DURATION",
    "REAP_STALE_AFTER",
    "RESUME_OVERDUE_GRACE",
    "ADMIN_LONG_WAIT_THRESHOLD",
)
BYTES_SETTINGS = (
    "CONTEXT_VALUE_MAX_BYTES",
    "CONTEXT_MAX_BYTES",
    "KWARGS_MAX_BYTES",
    "RESULT_MAX_BYTES",
    "MESSAGE_MAX_BYTES",
    "ERROR_CONTEXT_MAX_BYTES",
)
#: Limits counted in characters (positive ints, like the byte limits).
CHARS_SETTINGS = ("CONTEXT_KEY_MAX_LENGTH", "ERROR_MESSAGE_MAX_CHARS", "ERROR_BACKTRACE_MAX_CHARS")
CLUSTER_SETTINGS = ("CLUSTER", "BRANCH_MERGE_CLUSTER", "MAINTENANCE_CLUSTER")

#: The longest duration a setting or a command option may hold: far beyond any real need, and short
#: enough that "now" plus or minus it (times three, for REAP_STALE_AFTER) stays a valid datetime.
LONGEST_DURATION = timedelta(days=100 * 365)


def user_settings() -> dict[str, Any]:
    value = getattr(settings, "CHRONO_FORGE", None)
    return value if isinstance(value, dict) else {}


def get(name: str) -> Any:
    """The value of one setting, falling back to its default."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown chrono_forge setting {name!r}")
    return user_settings().get(name, DEFAULTS[name])


def as_timedelta(value: timedelta | int | float) -> timedelta:
    """Durations are ``timedelta`` or seconds (int/float); bool is neither."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise TypeError(f"expected a timedelta or a number of seconds, got {value!r}")


def as_duration(value: timedelta | int | float) -> timedelta:
    """:func:`as_timedelta`, refusing NaN, infinities and anything longer than LONGEST_DURATION
    (``ValueError``; a value of the wrong type stays a ``TypeError``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite duration, got {value!r}")
    try:
        delta = as_timedelta(value)
    except OverflowError:
        delta = timedelta.max
    if abs(delta) > LONGEST_DURATION:
        raise ValueError(
            f"must be at most {LONGEST_DURATION.days} days "
            f"({LONGEST_DURATION.total_seconds():.0f} seconds), got {value!r}"
        )
    return delta


def max_duration() -> timedelta:
    return as_timedelta(get("MAX_DURATION"))


def reap_stale_after() -> timedelta:
    explicit = get("REAP_STALE_AFTER")
    return as_timedelta(explicit) if explicit is not None else 3 * max_duration()


def replay_divergence() -> str:
    """``"warn"`` (record a ReplayDivergence and go on) or ``"stall"`` (stall the run)."""
    return get("REPLAY_DIVERGENCE")


def database() -> str:
    """The database alias holding chrono_forge's tables."""
    return get("DATABASE") or "default"


def primary_key_field_path() -> str:
    return get("PRIMARY_KEY_FIELD") or settings.DEFAULT_AUTO_FIELD


def primary_key_field():
    """The primary-key field of chrono_forge's models (migrations and models share it)."""
    field_class = import_string(primary_key_field_path())
    if issubclass(field_class, models.UUIDField):
        return field_class(
            default=uuid.uuid4, editable=False, primary_key=True, serialize=False, verbose_name="ID"
        )
    return field_class(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")


#: PostgreSQL's default operator class of each primary-key column type.
_KEY_OPCLASSES = {
    "SmallAutoField": "int2_ops",
    "AutoField": "int4_ops",
    "BigAutoField": "int8_ops",
    "UUIDField": "uuid_ops",
}


def key_opclass() -> str:
    """PostgreSQL's operator class for a column holding one of chrono_forge's primary keys (a
    foreign key): the default one of its type, for an index that names the operator class of
    every column because another of its columns needs ``varchar_pattern_ops``."""
    return _KEY_OPCLASSES[primary_key_field().get_internal_type()]
