"""``wait``: a durable sleep that holds no worker.

Step name ``wait$<name>``. The deadline (``metadata.wait_until``) is fixed when the step first runs
and is never extended by replays. The first pass INSERTs the log already ``pending`` with
``attempts=1`` and halts with a continuation at the deadline; a pass that arrives early (a resume, a
duplicate delivery) counts one more attempt and reschedules for the time remaining, i.e. the same
deadline; the first pass at or after the deadline marks the step completed and carries on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .. import clock
from ..exceptions import HaltExecution
from ..steps import COMPLETED, PENDING, duration_arg
from ..validation import step_name

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow


def wait(workflow: DurableWorkflow, duration: timedelta | float, name: str) -> None:
    run = workflow._pass
    step = step_name("wait", name)
    run.claim_step(step)
    # A zero wait is a plain checkpoint; a negative one is a bug in the caller's arithmetic.
    delay = duration_arg(duration, where=step, what="duration", non_negative=True)

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return
    now = clock.now()
    if log is None:
        deadline = now + delay
        done = deadline <= now
        run.steps.create(
            step,
            state=COMPLETED if done else PENDING,
            attempts=1,
            started_at=now,
            last_executed_at=now,
            completed_at=now if done else None,
            metadata={"wait_until": deadline.isoformat()},
        )
        if done:
            return
    else:
        deadline = datetime.fromisoformat(log.metadata["wait_until"])
        if now >= deadline:
            run.steps.update(
                log,
                state=COMPLETED,
                attempts=log.attempts + 1,
                last_executed_at=now,
                completed_at=now,
            )
            return
        run.steps.update(log, attempts=log.attempts + 1, last_executed_at=now)
    run.continue_at(deadline)
    raise HaltExecution()
