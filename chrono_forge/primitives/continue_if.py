"""``continue_if``: an event gate. No polling: a closed gate parks the run with nothing scheduled.

Step name ``continue_if$<name or condition>``. The condition is evaluated once per pass. The first
evaluation is recorded in the INSERT (``attempts=1``, completed or pending); a later evaluation
updates the same row once (attempt bump and, if met, completion together). A closed gate halts the
pass without a continuation, so ``Workflow.next_run_at`` stays None and ``Workflow.parked_on`` names
the gate (``parked_since``: since when): ``Cls.perform_later(key)`` or ``Workflow.resume()`` (from a
webhook, a signal, another workflow) wakes it. A condition that raises
is recorded and stalls the workflow; it is not retried (an operator retry evaluates it again;
until then, a replay raises the same failure without evaluating it). A condition raising
``SystemExit``/``KeyboardInterrupt`` is recorded and stalls alike, and the exception goes on so the
worker exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import clock
from ..errors import error_class_name, error_text
from ..exceptions import ExecutionFailedError, HaltExecution
from ..steps import COMPLETED, FAILED, FAILURE, PENDING, callsite, replay_failure, resolve_method
from ..validation import step_name

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow


def continue_if(workflow: DurableWorkflow, condition: Any, *, name: str | None = None) -> bool:
    run = workflow._pass
    func, condition_name = resolve_method(
        workflow, condition, kind=callsite("continue_if", condition, name)
    )
    step = step_name("continue_if", name if name is not None else condition_name)
    run.claim_step(step)

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return True
    if log is not None and log.state == FAILED:  # perform caught the error: replay the failure
        replay_failure(log)
    now = clock.now()
    metadata = {"condition": condition_name, "name": name}
    try:
        met = bool(func())
    except HaltExecution:
        raise
    except BaseException as error:  # SystemExit & co. too: recorded, then let through
        fields = {
            "state": FAILED,
            "error_class": error_class_name(error),
            "error_message": error_text(error),
        }
        failure = ExecutionFailedError(
            f"{step}: the condition {condition_name} raised {error!r}",
            step_name=step,
            recorded=True,
        )
        log = run.steps.record_attempt(
            step, log, metadata={**metadata, FAILURE: str(failure)}, **fields
        )
        run.record_error(error, step_name=step, attempt=log.attempts)
        if not isinstance(error, Exception):
            run.exiting(error, stalled=True)
            raise
        raise failure from error
    if met:
        run.steps.record_attempt(
            step, log, metadata={**metadata, "result": True}, state=COMPLETED, completed_at=now
        )
        return True
    run.steps.record_attempt(step, log, metadata=metadata, state=PENDING)
    raise run.park(step)  # no continuation: next_run_at stays None, parked_on names the gate
