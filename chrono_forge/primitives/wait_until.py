"""``wait_until``: poll a condition by continuation (never by sleeping in a worker) until it is
true or the timeout passes.

Step name ``wait_until$<name or condition>``; metadata ``condition``, ``timeout_at`` (fixed at the
first poll), ``check_interval`` and, once resolved, ``result`` (``true`` or ``"timed_out"``). Each
pass calls the condition once:

* true: the step completes and ``True`` is returned; replays return the stored result without
  calling the condition again;
* false before ``timeout_at``: the attempt is persisted (INSERT on the first poll) and the pass
  halts with a continuation after ``check_interval`` (never later than ``timeout_at``, so the last
  poll happens at the deadline) carrying ``wait_condition=<condition>``;
* false at or after ``timeout_at``: ``WaitConditionNotMet`` is recorded in ErrorLog, the step fails
  with ``result="timed_out"`` and the error is raised. Uncaught, it stalls the workflow (it is an
  ``ExecutionFailedError``); caught, the workflow goes on, and replays raise it again without
  polling;
* the condition raises: retried only per the call's ``retry_policy`` (never the class default;
  the built-in ``RetryPolicy.wait_default()`` retries nothing), then the step fails and the
  workflow stalls. ``SystemExit``/``KeyboardInterrupt`` are recorded and charged as a lost attempt
  (``StepAttemptLost``), then let through so the worker exits.

An operator retry of the stalled workflow gives the wait a fresh timeout (the executor's retry reset
drops ``timeout_at`` and ``result``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import clock
from ..errors import error_class_name
from ..exceptions import (
    HaltExecution,
    InvalidStepArgument,
    WaitConditionNotMet,
)
from ..retry import RetryPolicy, coerce
from ..steps import (
    COMPLETED,
    FAILED,
    FAILURE,
    PENDING,
    TIMED_OUT,
    callsite,
    duration_arg,
    replay_failure,
    resolve_method,
    retry_or_stall,
)
from ..validation import step_name

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow


def wait_until(
    workflow: DurableWorkflow,
    condition: Any,
    *,
    timeout: timedelta | float,
    check_interval: timedelta | float,
    retry_policy: Any = None,
    name: str | None = None,
) -> Any:
    run = workflow._pass
    where = callsite("wait_until", condition, name)
    func, condition_name = resolve_method(workflow, condition, kind=where)
    step = step_name("wait_until", name if name is not None else condition_name)
    run.claim_step(step)
    # A timeout <= 0 is meaningful: poll once, then time out.
    timeout = duration_arg(timeout, where=step, what="timeout")
    interval = duration_arg(check_interval, where=step, what="check_interval", positive=True)
    try:
        policy = coerce(retry_policy) or RetryPolicy.wait_default()
    except (TypeError, ValueError) as error:
        raise InvalidStepArgument(f"{step}: retry_policy: {error}") from None

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return (log.metadata or {}).get("result", True)
    if log is not None and log.state == FAILED:
        replay_failure(log)
    now = clock.now()
    metadata = dict(log.metadata or {}) if log is not None else {}
    if "timeout_at" not in metadata:  # the first poll, or the first after an operator retry
        metadata.update(
            condition=condition_name,
            timeout_at=(now + timeout).isoformat(),
            check_interval=interval.total_seconds(),
        )
    timeout_at = datetime.fromisoformat(metadata["timeout_at"])

    run.stop_if_cancelled()  # a primitive boundary: no condition runs on a cancelled run
    try:
        met = bool(func())
    except HaltExecution:
        raise
    except BaseException as error:  # SystemExit & co. too: recorded, then let through
        log = run.steps.record_attempt(step, log, metadata=metadata, state=PENDING)
        message = f"{step}: the condition {condition_name} raised {error!r}"
        retry_or_stall(run, log, error, policy, message=message)

    if met:
        run.steps.record_attempt(
            step, log, metadata={**metadata, "result": True}, state=COMPLETED, completed_at=now
        )
        return True
    if now >= timeout_at:
        timed_out = WaitConditionNotMet(
            f"{step}: {condition_name} was still false at the timeout ({timeout_at.isoformat()})",
            step_name=step,
            recorded=True,
        )
        log = run.steps.record_attempt(
            step,
            log,
            metadata={**metadata, "result": TIMED_OUT, FAILURE: str(timed_out)},
            state=FAILED,
            error_class=error_class_name(timed_out),
            error_message=str(timed_out),
        )
        run.record_error(timed_out, step_name=step, attempt=log.attempts)
        run.step_failed(step, timed_out, log.attempts)
        raise timed_out
    run.steps.record_attempt(step, log, metadata=metadata, state=PENDING)
    run.continue_at(min(now + interval, timeout_at), wait_condition=condition_name)
    raise HaltExecution()
