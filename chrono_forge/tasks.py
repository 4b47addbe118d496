"""The django-q2 entry point of every continuation."""

from __future__ import annotations

import logging
from typing import Any

from .exceptions import ConcurrentExecutionError, LongRunningConcurrentExecutionError
from .workflow import resolve_workflow_class

logger = logging.getLogger("chrono_forge")


def run_workflow(
    job_class: str,
    key: str,
    attempt: int = 0,
    retry_counts: dict[str, int] | None = None,
    retry_workflow: bool = False,
    **internal: Any,
) -> None:
    """Run one pass of ``job_class`` (a DurableWorkflow subclass only) for ``key``.

    A duplicate delivery that finds the workflow locked by a live run exits quietly.
    """
    workflow_class = resolve_workflow_class(job_class)
    try:
        workflow_class._execute(
            key,
            attempt=attempt,
            retry_counts=retry_counts,
            retry_workflow=retry_workflow,
            **internal,
        )
    except LongRunningConcurrentExecutionError:
        raise
    except ConcurrentExecutionError as error:
        logger.info("chrono_forge: %s", error)


def poll_merge(
    job_class: str,
    key: str,
    branch_log_ids: list[Any],
    token: str,
    min_interval: float = 5.0,
    max_interval: float = 300.0,
    merge_log_id: Any = None,
    attempt: int = 0,
) -> str:
    """One poll of a pending ``merge_branches`` (see :mod:`chrono_forge.merge_poller`)."""
    from .merge_poller import poll

    return poll(
        job_class,
        key,
        branch_log_ids,
        token,
        min_interval,
        max_interval,
        merge_log_id=merge_log_id,
        attempt=attempt,
    )
