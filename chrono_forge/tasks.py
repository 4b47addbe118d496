"""The django-q2 entry points: every workflow pass and every merge poll starts here.

Both take ``*args, **kwargs`` and check them (:mod:`chrono_forge.payloads`) before anything else: a
payload chrono_forge cannot have written is refused with one log line, and the task returns normally
so that django-q2 neither redelivers it nor records a traceback. The workflow class is looked up in
the registry (:mod:`chrono_forge.registry`); no module is ever imported because a payload names it.
"""

from __future__ import annotations

import logging
from typing import Any

from . import payloads, registry
from .exceptions import ConcurrentExecutionError, LongRunningConcurrentExecutionError
from .executor import BlockedPass
from .merge_poller import poll, poll_legacy_payload

logger = logging.getLogger("chrono_forge")


def _refuse(task: str, args: tuple, kwargs: dict, error: payloads.PayloadError) -> None:
    logger.error(
        "chrono_forge: refused a %s task with a malformed payload (%s); args=%s kwargs=%s",
        task,
        error,
        payloads.preview(args, 200),
        payloads.preview(kwargs, 200),
    )


def run_workflow(*args: Any, **kwargs: Any) -> None:
    """``run_workflow(job_class, key, **internal)``: one pass of the registered class ``job_class``
    for ``key``; ``internal`` are chrono_forge's own continuation arguments
    (:data:`chrono_forge.payloads.PASS_ARGUMENTS`).

    A class that is not registered stalls the row (if there is one) with an ErrorLog saying why. A
    duplicate delivery that finds the workflow locked by a live run exits quietly.
    """
    try:
        payload = payloads.run_workflow(args, kwargs)
    except payloads.PayloadError as error:
        _refuse("run_workflow", args, kwargs, error)
        return
    job_class, key = payload.pop("job_class"), payload.pop("key")
    try:
        workflow_class = registry.get(job_class)
        if workflow_class is None:
            missing = registry.UnregisteredWorkflowClass(registry.not_registered_message(job_class))
            BlockedPass(job_class, key, missing, **payload).execute()
            return
        workflow_class._execute(key, **payload)
    except LongRunningConcurrentExecutionError:
        raise
    except ConcurrentExecutionError as error:
        logger.info("chrono_forge: %s", error)


def poll_merge(*args: Any, **kwargs: Any) -> str:
    """``poll_merge(merge_log_id, token, *, attempt=0)``: one poll of a pending
    ``merge_branches`` (see :mod:`chrono_forge.merge_poller`). Returns what it did; ``"refused"``
    for a malformed payload. A payload of an earlier version (eight arguments, naming the parent
    and its branch logs) is still understood."""
    try:
        payload = payloads.poll_merge(args, kwargs)
    except payloads.PayloadError as error:
        _refuse("poll_merge", args, kwargs, error)
        return "refused"
    if payload.pop("legacy", False):
        return poll_legacy_payload(**payload)
    return poll(**payload)
