"""The django-q2 entry point of every continuation."""

from __future__ import annotations

import logging
from typing import Any

from .exceptions import ConcurrentExecutionError, LongRunningConcurrentExecutionError
from .workflow import resolve_workflow_class

logger = logging.getLogger("chrono_forge")


def run_workflow(job_class: str, key: str, attempt: int = 0, retry_counts: dict[str, int] | None = None,
                 retry_workflow: bool = False, **internal: Any) -> None:
    """Run one pass of ``job_class`` (a DurableWorkflow subclass only) for ``key``.

    A duplicate delivery that finds the workflow locked by a live run exits quietly.
    """
    workflow_class = resolve_workflow_class(job_class)
    try:
        workflow_class._execute(key, attempt=attempt, retry_counts=retry_counts,
                                retry_workflow=retry_workflow, **internal)
    except LongRunningConcurrentExecutionError:
        raise
    except ConcurrentExecutionError as error:
        logger.info("chrono_forge: %s", error)
