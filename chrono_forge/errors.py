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

#: The width of the ``error_class`` columns.
ERROR_CLASS_MAX_LENGTH = 255


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
    """PostgreSQL text columns cannot hold NUL: an error message must not fail its own recording."""
    return text.replace("\x00", "\\x00")


def storable_text(text: str, limit: int) -> str:
    """``text`` as every database stores it: NUL written ``\\x00``, lone surrogates (from a file
    name that is not UTF-8, say) written as ``\\udcxx`` escapes, and at most ``limit`` characters
    (the head and the tail kept around a marker saying how long the original was)."""
    text = printable(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text)} characters, truncated to {limit} ...]\n"
    keep = limit - len(marker)
    if keep < 2:
        return text[:limit]
    return text[: keep - keep // 2] + marker + text[len(text) - keep // 2 :]


def error_text(error: BaseException) -> str:
    """``str(error)``, even for an exception whose ``__str__`` itself raises."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}: str() failed>"


def storable_message(error: BaseException | str) -> str:
    """An error message as stored (ErrorLog and a step's ``error_message``): see storable_text,
    limited to ERROR_MESSAGE_MAX_CHARS."""
    text = error if isinstance(error, str) else error_text(error)
    return storable_text(text, conf.get("ERROR_MESSAGE_MAX_CHARS"))


def storable_backtrace(error: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:  # a traceback that cannot be formatted must not lose the error
        text = f"<the traceback of {type(error).__name__} could not be formatted>"
    return storable_text(text, conf.get("ERROR_BACKTRACE_MAX_CHARS"))


def error_class_name(error: BaseException) -> str:
    cls = type(error)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return storable_text(name, ERROR_CLASS_MAX_LENGTH)


def record_error(
    workflow_id: int,
    error: BaseException,
    *,
    step_name: str | None = None,
    attempt: int | None = None,
    context: Mapping[str, Any] | None = None,
) -> ErrorLog:
    now = clock.now()
    message = storable_message(error)
    logger.warning(
        "chrono_forge: %s in workflow %s%s: %s",
        type(error).__name__,
        workflow_id,
        f" step {step_name} attempt {attempt}" if step_name else "",
        message,
    )
    return ErrorLog.objects.create(
        workflow_id=workflow_id,
        step_name=step_name,
        attempt=attempt,
        error_class=error_class_name(error),
        error_message=message,
        backtrace=storable_backtrace(error),
        context=context_snapshot(context or {}),
        created=now,
        modified=now,
    )
