"""Operator bulk actions, run as background tasks (``dispatch.enqueue_call``) so that an admin
request stays O(1) however many workflows they touch. Each returns how many workflows it handled."""

from __future__ import annotations

import logging

from .exceptions import ChronoForgeError
from .models import Workflow, cancel_one
from .validation import validate_reason

logger = logging.getLogger("chrono_forge")

#: Rows read per round trip while iterating.
BATCH_SIZE = 500


def blocked_queryset(branch_log_id: int | None = None):
    """Failed and stalled workflows (only the children of one branch log when ``branch_log_id``)."""
    queryset = Workflow.objects.blocked()
    if branch_log_id is not None:
        queryset = queryset.filter(parent_execution_log_id=branch_log_id)
    return queryset


def bulk_retry_blocked(branch_log_id: int | None = None) -> int:
    """``retry_later`` every failed/stalled workflow; a row that cannot be retried (its class is
    not registered, it was retried meanwhile, ...) is logged and skipped. Returns how many were
    retried."""
    retried = 0
    rows = blocked_queryset(branch_log_id).only("id", "job_class", "key", "state").order_by("id")
    for row in rows.iterator(chunk_size=BATCH_SIZE):
        try:
            row.retry_later()
        except ChronoForgeError as error:  # not registered here, retried meanwhile, ...
            logger.warning(
                "chrono_forge: bulk retry skipped %s(%s): %s", row.job_class, row.key, error
            )
            continue
        except Exception:  # one bad row must not stop the batch
            logger.exception("chrono_forge: bulk retry skipped %s(%s)", row.job_class, row.key)
            continue
        retried += 1
    logger.info("chrono_forge: bulk retry re-enqueued %d blocked workflow(s)", retried)
    return retried


def reap_all() -> int:
    """Re-enqueue every stranded workflow (``Workflow.objects.reap_stalled()``)."""
    reaped = Workflow.objects.reap_stalled()
    logger.info("chrono_forge: reaped %d stranded workflow(s)", reaped)
    return reaped


def cancel_workflow(workflow: Workflow, reason: str = "") -> int:
    """Cancel one run and its branch children (recursively); returns how many runs were cancelled
    (the run included). Raises WorkflowNotCancellableError for a finished run, and TypeError /
    ValueError for a bad reason (nothing is changed)."""
    total = cancel_one(workflow, reason)
    logger.info("chrono_forge: cancelled %s (%d run(s) in all): %s", workflow, total, reason)
    return total


def cancel_selected(ids, reason: str = "") -> int:
    """Cancel the unfinished runs among ``ids`` and their descendants; finished ones are left
    alone. Returns how many runs were cancelled."""
    reason = validate_reason(reason)
    total = Workflow.objects.filter(pk__in=list(ids)).cancel(reason)
    logger.info("chrono_forge: cancelled %d selected workflow run(s): %s", total, reason)
    return total


def cancellable_children(branch_log_id) -> object:
    """The unfinished children of one branch log."""
    return Workflow.objects.filter(parent_execution_log_id=branch_log_id).cancellable()


def cancel_branch(branch_log_id, reason: str = "") -> int:
    """Cancel every unfinished child of one branch (and their descendants), in keyset batches;
    run as a background task by the admin. Returns how many runs were cancelled."""
    reason = validate_reason(reason)
    total = Workflow.objects.filter(parent_execution_log_id=branch_log_id).cancel(reason)
    logger.info(
        "chrono_forge: cancelled %d run(s) of branch log %s: %s", total, branch_log_id, reason
    )
    return total
