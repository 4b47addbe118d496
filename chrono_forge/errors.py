"""Recording errors in ErrorLog, each with a bounded snapshot of the workflow context."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from . import clock, conf
from .models import ErrorLog
from .validation import json_size

logger = logging.getLogger("chrono_forge")

OMITTED = "<<omitted>>"


def context_snapshot(context: Mapping[str, Any], budget: int | None = None) -> dict[str, Any]:
    """Every key of ``context``; values kept in order while the total stays within ``budget`` bytes,
    later (or individually too large) values replaced by ``"<<omitted>>"``."""
    budget = conf.get("ERROR_CONTEXT_MAX_BYTES") if budget is None else budget
    snapshot: dict[str, Any] = {}
    used = 2  # the braces
    for key, value in context.items():
        entry = json_size(key) + 4  # quotes, colon, comma
        size = json_size(value) + (2 if isinstance(value, str) else 0)
        if used + entry + size <= budget:
            snapshot[key] = value
            used += entry + size
        else:
            snapshot[key] = OMITTED
            used += entry + len(OMITTED) + 2
    return snapshot


def printable(text: str) -> str:
    """PostgreSQL text columns cannot hold NUL: an error message must never fail its own recording."""
    return text.replace("\x00", "\\x00")


def error_class_name(error: BaseException) -> str:
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def record_error(
    workflow_id: int,
    error: BaseException,
    *,
    step_name: str | None = None,
    attempt: int | None = None,
    context: Mapping[str, Any] | None = None,
) -> ErrorLog:
    now = clock.now()
    logger.warning(
        "chrono_forge: %s in workflow %s%s: %s",
        type(error).__name__,
        workflow_id,
        f" step {step_name} attempt {attempt}" if step_name else "",
        error,
    )
    return ErrorLog.objects.create(
        workflow_id=workflow_id,
        step_name=step_name,
        attempt=attempt,
        error_class=error_class_name(error),
        error_message=printable(str(error)),
        backtrace=printable("".join(traceback.format_exception(error))),
        context=context_snapshot(context or {}),
        created=now,
        modified=now,
    )
