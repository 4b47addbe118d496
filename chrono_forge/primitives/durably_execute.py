"""``durably_execute``: run a method once, checkpointed, with retries and a stored result.

Step name ``durably_execute$<name or method>``. The first attempt is recorded in the INSERT (no
separate attempt UPDATE); a retry bumps ``attempts`` before running. The method runs outside any
transaction; its completion is committed with the pass's next write. At-least-once: a hard kill
after the side effect but before that commit runs the method again on the next pass.

An attempt whose worker died in it (found pending and unfinished by a later pass) is recorded as
``StepAttemptLost`` and charged to the policy; a body raising ``SystemExit`` or
``KeyboardInterrupt`` is recorded and charged alike, then let through so the worker exits. A failed
step replays its failure.

``timeout``: an attempt still running past it counts as a failed attempt (``StepTimeout``, charged
to the policy). It is interrupted in process where a signal can do it (chrono_forge.alarm), counted
when it returns late elsewhere, and found by a later pass when its worker died or hung in it (the
reaper hands that pass the lock).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import alarm, clock, conf, telemetry
from ..errors import error_class_name
from ..exceptions import HaltExecution, InvalidStepResult, StepTimeout
from ..steps import (
    COMPLETED,
    FAILED,
    FAILURE,
    PENDING,
    begin_attempt,
    duration_arg,
    resolve_method,
    retry_or_stall,
)
from ..validation import step_name, to_json

if TYPE_CHECKING:  # pragma: no cover
    from ..executor import Pass
    from ..models import ExecutionLog
    from ..workflow import DurableWorkflow

logger = logging.getLogger("chrono_forge")


def durably_execute(
    workflow: DurableWorkflow,
    method: Any,
    *,
    retry_policy: Any = None,
    name: str | None = None,
    timeout: Any = None,
) -> Any:
    run = workflow._pass
    func, method_name = resolve_method(workflow, method, kind="durably_execute")
    step = step_name("durably_execute", name if name is not None else method_name)
    limit = None
    if timeout is not None:
        limit = duration_arg(timeout, where=step, what="timeout", positive=True)
    run.claim_step(step)
    policy = run.step_policy(retry_policy, where=step)

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return log.result
    log = begin_attempt(run, step, log, policy, timeout=limit, state=PENDING)

    try:
        with telemetry.step_span(run, step, log.attempts):
            if limit is None:
                result = func()
            else:
                result = run_within(func, limit, log)
    except HaltExecution:
        raise
    except BaseException as error:  # SystemExit & co. too: recorded, then let through
        retry_or_stall(run, log, error, policy)
    stored = storable_result(step, result, run, log)
    run.steps.complete_later(log, state=COMPLETED, completed_at=clock.now(), result=stored)
    return stored


def run_within(func: Any, limit: timedelta, log: ExecutionLog) -> Any:
    """``func()``, interrupted at ``limit`` where a signal can do it; a call that returns after
    ``limit`` (nothing could interrupt it) counts as timed out all the same."""
    seconds = limit.total_seconds()
    attempt = log.attempts

    def timed_out(how: str) -> StepTimeout:
        return StepTimeout(
            f"{log.step_name}: attempt {attempt} ran past its timeout of {seconds:g} s ({how})",
            step_name=log.step_name,
            attempt=attempt,
            timeout=seconds,
        )

    started = time.monotonic()
    with alarm.interrupt_after(limit, lambda: timed_out("interrupted")):
        result = func()
    took = time.monotonic() - started
    if took > seconds:
        raise timed_out(f"returned after {took:.3g} s")
    return result


def storable_result(step: str, result: Any, run: Pass, log: ExecutionLog) -> Any:
    """The JSON form of a step's return value, or InvalidStepResult (recorded, step failed)."""
    try:
        limit = conf.get("RESULT_MAX_BYTES")
        stored = to_json(
            result, f"the return value of {step}", max_bytes=limit, setting="RESULT_MAX_BYTES"
        )
    except (TypeError, ValueError) as error:
        error = error if isinstance(error, InvalidStepResult) else InvalidStepResult(str(error))
        run.record_error(error, step_name=step, attempt=log.attempts)
        run.steps.update(
            log,
            state=FAILED,
            error_class=error_class_name(error),
            error_message=str(error),
            metadata={**(log.metadata or {}), FAILURE: str(error)},
        )
        # NotExecutableError carries no ``recorded`` flag; the executor reads it with getattr().
        error.recorded = True  # type: ignore[attr-defined]
        run.step_failed(step, error, log.attempts)
        raise error from None
    return stored
