"""``merge_branches`` (alias ``merge_branch``): wait until every child of the branches completed.

Step name ``merge$<sorted,comma,joined,names>``. The merge first probes (one EXISTS on the
``(parent_execution_log, state)`` index, whatever the number of children): when nothing is left the
log is born completed and the pass goes on. Otherwise the log is written pending with a fresh
fencing token (also stored on every merged branch log), ONE merge poller task is scheduled on the
``BRANCH_MERGE_CLUSTER`` queue, and the pass parks: the parent is not replayed while it waits. The
poller (:mod:`chrono_forge.merge_poller`) wakes it when every child completed. The parent's
``next_run_at`` holds the next poll's due time (nothing is enqueued for it), so a lost poller makes
the parent overdue and the overdue sweep replays it: the replayed merge re-arms a poller.

Any later pass that reaches the still-pending merge (the poller's wake-up, or an operator's resume)
probes again, and if children are still running re-arms with a new token, which retires the previous
poller. Only ``completed`` children count as done: a failed, stalled or cancelled child holds the
merge until an operator retries it: a merge never completes over a child that did not.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction

from .. import clock, conf, dispatch
from ..exceptions import HaltExecution, InvalidStepArgument, UnknownBranchError
from ..models import ExecutionLog, Workflow
from ..payloads import json_pk
from ..steps import COMPLETED, PENDING
from ..validation import step_name, validate_name

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow


#: Child states that are not done (``completed`` is the only done state). A cancelled child holds
#: the merge like a failed one (it is shown blocked; ``retry --force`` resumes it): a merge never
#: completes over a child that did not.
INCOMPLETE_STATES = (
    Workflow.STATE.idle,
    Workflow.STATE.running,
    Workflow.STATE.failed,
    Workflow.STATE.stalled,
    Workflow.STATE.cancelled,
)


def merge_branches(
    workflow: DurableWorkflow,
    *names: str,
    min_interval: Any = timedelta(seconds=5),
    max_interval: Any = timedelta(minutes=5),
) -> None:
    run = workflow._pass
    if not names:
        raise InvalidStepArgument("merge_branches needs at least one branch name")
    for name in names:
        validate_name(name, what="merge branch name", forbidden="$,")
    unique = sorted(set(names))
    step = step_name("merge", ",".join(unique))
    run.claim_step(step)
    low = _interval(min_interval, "min_interval", step)
    high = _interval(max_interval, "max_interval", step)
    if low > high:
        raise InvalidStepArgument(
            f"{step}: min_interval ({low:g}s) must not exceed max_interval ({high:g}s)"
        )

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return
    branch_logs = []
    for name in unique:
        branch_log = run.steps.get(f"branch${name}")
        if branch_log is None:
            raise UnknownBranchError(
                f"{step}: branch {name!r} was never opened; "
                f"call self.branch({name!r}, ...) before merging it"
            )
        branch_logs.append(branch_log)
    ids = [json_pk(branch_log.pk) for branch_log in branch_logs]  # task args: JSON literals

    now = clock.now()
    if all_children_completed(branch_logs):
        if log is None:  # resolved on first sight: born completed, one INSERT
            run.steps.create_completed(
                step,
                now,
                metadata=_metadata(unique, low, high, None),
            )
        else:
            run.steps.update(log, state=COMPLETED, completed_at=now, last_executed_at=now)
        return

    token = uuid.uuid4().hex
    with transaction.atomic(using=run.db):
        if log is None:
            log = run.steps.create(
                step,
                state=PENDING,
                attempts=1,
                started_at=now,
                last_executed_at=now,
                metadata=_metadata(unique, low, high, token),
            )
        else:
            run.steps.update(
                log,
                attempts=log.attempts + 1,
                last_executed_at=now,
                metadata={**(log.metadata or {}), **_metadata(unique, low, high, token)},
            )
        # Read-modify-write under the row locks the poller takes too: no one loses the other's keys.
        for branch_log in (
            ExecutionLog.objects.select_for_update().filter(pk__in=ids).only("id", "metadata")
        ):
            ExecutionLog.objects.filter(pk=branch_log.pk).update(
                metadata={**(branch_log.metadata or {}), "poll_token": token}, modified=now
            )
        schedule_poll(json_pk(log.pk), token, run_at=now + timedelta(seconds=low))
    # Nothing is enqueued for the parent (the poller wakes it), but the first poll's due time
    # becomes the parent's: if the poller is lost, the overdue sweep replays the parent, whose
    # merge re-arms a poller. Each poll carries the due time forward to the next one.
    run.expect_at(now + timedelta(seconds=low))
    raise HaltExecution()


def schedule_poll(merge_log_id: Any, token: str, *, run_at: datetime, attempt: int = 0) -> None:
    """Enqueue one poll of the merge whose step log is ``merge_log_id``, armed with ``token``, on
    the ``BRANCH_MERGE_CLUSTER`` queue. The merge log holds the parent, the branch names and the
    intervals, so the payload carries only what tells this poller from a superseded one."""
    extra = {"attempt": attempt} if attempt else {}
    dispatch.enqueue_call(
        dispatch.POLL_TASK,
        merge_log_id,
        token,
        run_at=run_at,
        cluster=conf.get("BRANCH_MERGE_CLUSTER"),
        **extra,
    )


def all_children_completed(branch_logs: list[ExecutionLog]) -> bool:
    """Every branch sealed and no child left in an incomplete state (one EXISTS query)."""
    if any(branch_log.state != COMPLETED for branch_log in branch_logs):
        return False
    return not Workflow.objects.filter(
        parent_execution_log_id__in=[branch_log.pk for branch_log in branch_logs],
        state__in=INCOMPLETE_STATES,
    ).exists()


def _metadata(names: list[str], low: float, high: float, token: str | None) -> dict[str, Any]:
    return {"branches": names, "min_interval": low, "max_interval": high, "poll_token": token}


def _interval(value: Any, what: str, step: str) -> float:
    try:
        seconds = conf.as_duration(value).total_seconds()
    except (TypeError, ValueError) as error:  # not a duration, NaN, infinite, too long
        raise InvalidStepArgument(f"{step}: {what}: {error}") from None
    if seconds <= 0:
        raise InvalidStepArgument(f"{step}: {what} must be positive, got {value!r}")
    return seconds
