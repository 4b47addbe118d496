"""Operator actions: one home for each action's precondition, its operator-facing message and
its batching. The admin, the ``chrono_forge`` command and the maintenance Schedules are thin
callers.

Single-workflow actions return the message to show and raise ChronoForgeError (its text says why
and what to do instead) when the workflow is not in a state the action applies to. Bulk actions run
as background tasks (``dispatch.enqueue_call``) so that an admin request stays O(1) however many
workflows they touch; each returns how many workflows it handled.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from . import conf, dispatch
from .cancellation import cancel_one, cancel_queryset
from .exceptions import ChronoForgeError
from .formatting import human_duration
from .liveness import overdue_grace
from .models import Workflow
from .validation import validate_reason

logger = logging.getLogger("chrono_forge")

#: Rows read per round trip while iterating.
BATCH_SIZE = 500


# -- one workflow ----------------------------------------------------------------------------------
#: Why resume refuses a workflow that is not idle, and what to do instead (the admin's buttons
#: carry the same names as the commands).
RESUME_HINTS = {
    "failed": "retry it instead: `chrono_forge retry`",
    "stalled": "retry it instead: `chrono_forge retry`",
    "running": "it is running; if its worker died, reap it: `chrono_forge reap`",
    "completed": "it has nothing left to do",
    "cancelled": "it was cancelled; a forced retry resumes it: `chrono_forge retry --force`",
}


def resume(workflow: Workflow) -> str:
    """Re-enqueue an idle workflow (a ``continue_if`` whose event arrived, a lost delivery)."""
    if workflow.state != Workflow.STATE.idle:
        hint = RESUME_HINTS[workflow.state]
        raise ChronoForgeError(
            f"{workflow} is {workflow.state}; only idle workflows can be resumed ({hint})."
        )
    workflow.resume()
    return f"Resumed {workflow}: a pass is enqueued."


def retry(workflow: Workflow, *, now: bool = False, force: bool = False) -> str:
    """Retry a failed or stalled workflow through the queue (``now``: one pass here, inline); a
    cancelled one only with ``force``, which replays it from the top."""
    forced = force and workflow.state == Workflow.STATE.cancelled
    if not workflow.retryable and not forced:
        hint = {
            "idle": "resume it instead: `chrono_forge resume`",
            "cancelled": "retry it on purpose: `chrono_forge retry --force`",
        }.get(workflow.state, "nothing to retry")
        raise ChronoForgeError(
            f"{workflow} is {workflow.state}; only failed or stalled workflows can be retried "
            f"({hint})."
        )
    if now:
        workflow.retry_now(resume_cancelled=forced)
        workflow.refresh_from_db(fields=["state"])
        return f"Retried {workflow} here: it is now {workflow.state}."
    workflow.retry_later(resume_cancelled=forced)
    return f"{workflow} will be retried shortly."


def reap(workflow: Workflow) -> str:
    """Re-enqueue one stranded workflow; the executor steals its stale lock."""
    if not Workflow.objects.stranded().filter(pk=workflow.pk).exists():
        raise ChronoForgeError(
            f"{workflow} is not stranded: only running workflows whose lock is older than "
            f"{human_duration(conf.reap_stale_after().total_seconds())} can be reaped."
        )
    workflow.workflow_class()  # refuse a class that is not registered before enqueuing
    dispatch.enqueue(workflow.job_class, workflow.key)
    return f"{workflow} was re-enqueued; the next pass takes over its stale lock."


def redeliver(workflow: Workflow) -> str:
    """Re-send one overdue delivery, through the overdue sweep's own code path."""
    if not Workflow.objects.filter(pk=workflow.pk).resume_overdue():
        raise ChronoForgeError(
            f"{workflow} is not overdue: only deliveries late by more than "
            f"{human_duration(overdue_grace().total_seconds())} (RESUME_OVERDUE_GRACE) are "
            "re-sent."
        )
    return f"{workflow}: its overdue delivery was sent again."


def force_unlock(workflow: Workflow) -> str:
    """Clear a running workflow's lock, leaving it idle with nothing scheduled."""
    if workflow.state != Workflow.STATE.running:
        raise ChronoForgeError(
            f"{workflow} is {workflow.state}; only running workflows can be force-unlocked."
        )
    workflow.force_unlock()
    return (
        f"{workflow} was unlocked and is idle with nothing scheduled: resume it to run it again "
        "(if its worker is still alive, steps may run twice)."
    )


# -- many workflows --------------------------------------------------------------------------------
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


def reap_all(stale_after: timedelta | None = None) -> int:
    """Re-enqueue every stranded workflow (``Workflow.objects.reap_stalled``; default threshold
    REAP_STALE_AFTER), one bulk enqueue per page."""
    reaped = Workflow.objects.reap_stalled(stale_after)
    logger.info("chrono_forge: reaped %d stranded workflow(s)", reaped)
    return reaped


def cancel_past_deadline() -> int:
    """Cancel every unfinished run past its deadline (reason ``deadline exceeded``, recorded in
    ErrorLog), in keyset batches; the overdue sweep runs it first. Returns how many."""
    return Workflow.objects.cancel_past_deadline()


def resume_overdue_all(grace: timedelta | None = None) -> int:
    """Re-send every overdue delivery (``Workflow.objects.resume_overdue``; default grace
    RESUME_OVERDUE_GRACE), one bulk enqueue per page."""
    resumed = Workflow.objects.resume_overdue(grace)
    logger.info("chrono_forge: resumed %d overdue workflow(s)", resumed)
    return resumed


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
    total = cancel_queryset(Workflow.objects.filter(pk__in=list(ids)), reason)
    logger.info("chrono_forge: cancelled %d selected workflow run(s): %s", total, reason)
    return total


def cancellable_children(branch_log_id) -> object:
    """The unfinished children of one branch log."""
    return Workflow.objects.filter(parent_execution_log_id=branch_log_id).cancellable()


def cancel_branch(branch_log_id, reason: str = "") -> int:
    """Cancel every unfinished child of one branch (and their descendants), in keyset batches;
    run as a background task by the admin. Returns how many runs were cancelled."""
    reason = validate_reason(reason)
    total = cancel_queryset(Workflow.objects.filter(parent_execution_log_id=branch_log_id), reason)
    logger.info(
        "chrono_forge: cancelled %d run(s) of branch log %s: %s", total, branch_log_id, reason
    )
    return total
