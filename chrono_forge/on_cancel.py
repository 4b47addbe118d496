"""The ``on_cancel`` hook: a workflow's compensation, run once as a durable step after its
cancellation is recorded.

A class that defines ``on_cancel(self, reason)`` gets, in the very UPDATE that cancels one of its
runs, a due time (``next_run_at = cancelled_at``) and the hook's step name in ``parked_on``
(``$workflow_on_cancel$<unix seconds of the cancel>``): the cancelled row is *scheduled* until the
hook completed or used up its retries, so a lost delivery is re-sent by the overdue sweep. That
``parked_on`` is what tells a pending hook from a pending forced retry (``resume_cancelled``), the
other delivery a cancelled row can have a due time for: the sweep re-sends a plain tokened
delivery for the first and a forced retry for the second, and a forced retry clears ``parked_on``
when it is requested (it supersedes the hook: the run is resumed, there is nothing to compensate).

The hook runs in its own delivery, never in the cancelled pass: a run cancelled while idle gets it
enqueued by the cancel; a running pass stops at its next primitive boundary, releases its lock
(keeping ``cancelled``) and then publishes the hook's delivery, so the hook never runs beside a
step body of its own run. A hook delivery that finds that lock still held exits (the holder
publishes it); a holder that died leaves a lock the hook takes once it is older than MAX_DURATION
(the sweep re-sends the delivery until then).

The hook pass takes the row (``SELECT ... FOR UPDATE``) and moves its due time forward by
MAX_DURATION, a lease: a duplicate delivery no longer matches the token, and a worker killed in the
hook leaves the row scheduled at the lease's end, when the overdue sweep re-sends it. The attempt
goes through the step lifecycle of :mod:`chrono_forge.steps` that ``durably_execute`` uses
(``begin_attempt``: its first one in the INSERT; ``retry_or_stall``); the hook's return value
is stored as the step's result and committed with the row's release (no due time, no
``parked_on``) in one transaction. A failure is recorded in ErrorLog and retried per
``on_cancel_retry_policy`` by a tokened continuation; when the budget is used up the step is
``failed`` and the run stays ``cancelled``. At-least-once: a kill after the hook body but before
that commit runs it again (the lost attempt is charged to the policy); after it, never again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db.models import Case, CharField, DateTimeField, Q, Value, When

from . import clock, dispatch, registry, step_names, telemetry
from .exceptions import ExecutionFailedError, HaltExecution, InvalidStepResult
from .models import ExecutionLog, Workflow
from .primitives.durably_execute import storable_result
from .steps import (
    COMPLETED,
    FAILED,
    PENDING,
    STEP_COLUMNS,
    begin_attempt,
    retry_or_stall,
)

if TYPE_CHECKING:  # pragma: no cover
    from .executor import Delivery, Pass
    from .retry import AnyRetryPolicy
    from .workflow import DurableWorkflow

logger = logging.getLogger("chrono_forge")

CANCELLED = Workflow.STATE.cancelled


def defines_hook(workflow_class: type[DurableWorkflow] | None) -> bool:
    """Whether the class has an ``on_cancel`` method (the base class has none)."""
    return workflow_class is not None and callable(getattr(workflow_class, "on_cancel", None))


def hook_classes() -> list[str]:
    """The registered classes that define ``on_cancel`` (their ``job_class``), sorted."""
    return sorted(
        job_class for job_class, cls in registry.registered().items() if defines_hook(cls)
    )


def pending(row: Workflow) -> bool:
    """A cancelled row whose ``on_cancel`` hook is due (its ``parked_on`` names the hook's step and
    it has a due time), as opposed to one with a pending forced retry."""
    return (
        row.state == CANCELLED
        and row.next_run_at is not None
        and step_names.is_on_cancel_marker(row.parked_on)
    )


def schedule_fields(hooked: list[str], now: datetime) -> dict[str, Any]:
    """The columns a cancel's UPDATE writes so that the rows of ``hooked`` classes are scheduled
    for their hook (due ``now``, ``parked_on`` naming its step) and the others have no due time:
    one conditional expression each, so a batch of any mix of classes is still one UPDATE."""
    marker = step_names.on_cancel_marker(int(now.timestamp()))
    mine = Q(job_class__in=hooked)
    return {
        "next_run_at": Case(
            When(mine, then=Value(now)), default=Value(None), output_field=DateTimeField()
        ),
        "parked_on": Case(
            When(mine, then=Value(marker)), default=Value(None), output_field=CharField()
        ),
    }


def enqueue_batch(runs: list[tuple[str, str]], now: datetime) -> None:
    """The hook deliveries of one batch of rows just cancelled at ``now`` (one bulk enqueue). A
    refused enqueue is logged, not raised: the rows are due, the overdue sweep sends them, and the
    rest of the cancel (the other batches, the children) goes on."""
    if not runs:
        return
    try:
        dispatch.enqueue_many(runs, token=dispatch.token_for(now))
    except Exception:
        logger.exception(
            "chrono_forge: could not enqueue the on_cancel hook of %d cancelled run(s); the "
            "overdue sweep sends them",
            len(runs),
        )


def claim(delivery: Delivery, row: Workflow, now: datetime) -> bool:
    """Inside the lock transaction of a delivery whose token matches a pending hook: take it.
    False when the cancelled pass still holds its live lock (its release publishes the hook).
    Otherwise the due time moves forward by the lock's time-to-live (a lease: a duplicate
    delivery no longer matches, a killed hook is overdue at its end) and the delivery builds the
    pass that runs :func:`run_hook`."""
    if delivery.lock_holder(row, now):
        logger.info(
            "chrono_forge: %s: the cancelled pass still holds the lock; its release sends the "
            "on_cancel hook",
            row,
        )
        return False
    lease = now + delivery.lock_ttl()
    Workflow.objects.filter(pk=row.pk).update(
        next_run_at=lease, locked_by=None, locked_at=None, modified=now
    )
    row.next_run_at, row.locked_by, row.locked_at = lease, None, None
    return True


def run_hook(run: Pass) -> None:
    """Run the hook of the pass's claimed row once (see the module docstring)."""
    row, step = run.row, run.on_cancel_step
    assert step is not None  # set by claim()
    policy = run.workflow_class.on_cancel_policy()
    log = ExecutionLog.objects.filter(workflow_id=row.pk, step_name=step).only(*STEP_COLUMNS).one()
    if log is not None:
        run.steps._by_name = {step: log}
    if log is not None and log.state in (COMPLETED, FAILED):
        logger.info("chrono_forge: %s: the on_cancel hook already finished (%s)", row, log.state)
        _release(run, step)
        return
    try:
        _attempt(run, step, log, policy)
    except BaseException as error:
        if error is run.exit_error:  # the worker is going down: recorded, then let through
            _release(run, step)
            raise
        if not isinstance(error, RECORDED):
            raise  # not recorded (a database error): the lease's end re-sends the hook
        _release(run, step)
        return
    _release(run, step)


#: What :func:`_attempt` raises once the step lifecycle recorded the attempt's outcome: a retry is
#: due, the hook failed for good, or its return value cannot be stored (a programming error, the
#: step is failed and not retried).
RECORDED = (HaltExecution, ExecutionFailedError, InvalidStepResult)


def _attempt(run: Pass, step: str, log: ExecutionLog | None, policy: AnyRetryPolicy) -> None:
    """One attempt of the hook, through the lifecycle every durable step uses: an attempt a dead
    worker never finished is charged to ``policy`` first (a retry halts, a used-up budget fails
    the step), then this attempt is recorded and the body runs; a failure is recorded and retried
    or fails the step, and the result completes with the release."""
    log = begin_attempt(run, step, log, policy, state=PENDING)
    reason = Workflow.objects.filter(pk=run.row.pk).values_list("cancel_reason", flat=True).one()
    instance = run.workflow_class._bind(run.row, run)
    try:
        with telemetry.step_span(run, step, log.attempts):
            returned = instance.on_cancel(reason or "")  # type: ignore[attr-defined]
    except BaseException as error:  # SystemExit & co. too: recorded, then let through
        retry_or_stall(run, log, error, policy)
    stored = storable_result(step, returned, run, log)
    run.steps.complete_later(log, state=COMPLETED, completed_at=clock.now(), result=stored)


def _release(run: Pass, step: str) -> None:
    """End the hook pass: the row keeps a due time (and ``parked_on``) only for a retry the
    failure scheduled, else it has neither; the hook step's completion commits with this UPDATE.
    An UPDATE that matches nothing means a forced retry superseded the hook meanwhile."""
    due = run.continuation[0] if run.continuation else None
    now = clock.now()
    mine = Workflow.objects.filter(
        pk=run.row.pk, state=CANCELLED, parked_on=step, next_run_at=run.row.next_run_at
    )
    with run.steps.flushing():
        updated = mine.update(next_run_at=due, parked_on=step if due else None, modified=now)
    run.released = True
    if not updated:
        logger.info("chrono_forge: %s: the on_cancel hook was superseded meanwhile", run.row)
        return
    run.row.next_run_at = due
    if due is not None:
        dispatch.enqueue(run.job_class, run.key, run_at=due, token=dispatch.token_for(due))


def publish_after_cancelled_pass(run: Pass) -> None:
    """A pass that was cancelled under its lock released it: send the hook's delivery now (the
    one the cancel enqueued found the lock held). Costs one SELECT, for classes with a hook only;
    a refused enqueue is logged (the row is due: the overdue sweep sends it)."""
    if not defines_hook(run.workflow_class):
        return
    found = (
        Workflow.objects.filter(pk=run.row.pk).only("id", "state", "next_run_at", "parked_on").one()
    )
    if found is None or not pending(found):
        return
    assert found.next_run_at is not None  # pending() checked it
    try:
        dispatch.enqueue(run.job_class, run.key, token=dispatch.token_for(found.next_run_at))
    except Exception:
        logger.exception(
            "chrono_forge: could not enqueue the on_cancel hook of %s; the overdue sweep sends it",
            run.row,
        )
