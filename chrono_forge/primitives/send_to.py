"""``send_to``: send a message to another run from inside a workflow, once across replays.

Step name ``send_to$<name or topic>``; metadata ``target`` (the class path and key), ``topic`` and,
once sent, the result is the message's id. The send carries an idempotency key made of this run's
id and the step name, so however often the step runs (a worker dying after the send committed and
before the step's completion did, a retry), the target stores the message once; the completion
rides with the pass's next write like any step's.

An unknown or completed target fails the attempt and is retried per the step's retry policy
(default: the class's, else 3 attempts), then the step fails and the workflow stalls: a target
started a moment later by someone else is found on a retry. Bad arguments (not a workflow class,
a bad key, topic or payload) stall the workflow before anything is stored.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .. import clock
from ..exceptions import HaltExecution, InvalidStepArgument
from ..messages import send
from ..steps import COMPLETED, PENDING, begin_attempt, retry_or_stall
from ..validation import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    step_name,
    validate_key,
    validate_payload,
    validate_topic,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow


def idempotency_key(workflow_id: Any, step: str) -> str:
    """The key every attempt of one send_to step sends with (unique per sending run and step)."""
    key = f"send_to:{workflow_id}:{step}"
    if len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        return key
    return f"send_to:{workflow_id}:sha256:{hashlib.sha256(step.encode()).hexdigest()}"


def send_to(
    workflow: DurableWorkflow,
    target: Any,
    key: str,
    topic: str,
    payload: Any,
    *,
    name: str | None = None,
    retry_policy: Any = None,
) -> Any:
    from ..workflow import DurableWorkflow  # here: workflow imports the primitives

    run = workflow._pass
    label = name if name is not None else topic
    where = f"send_to${label}" if isinstance(label, str) else "send_to"
    if not (isinstance(target, type) and issubclass(target, DurableWorkflow)):
        raise InvalidStepArgument(
            f"{where}: the target must be a DurableWorkflow subclass, got {target!r}"
        )
    try:
        validate_key(key, child=True)
        validate_topic(topic)
        payload = validate_payload(payload)
        job_class = target.job_class()
    except (TypeError, ValueError) as error:
        raise InvalidStepArgument(f"{where}: {error}") from None
    step = step_name("send_to", label)
    run.claim_step(step)
    policy = run.step_policy(retry_policy, where=step)

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return log.result
    metadata = {"target": job_class, "key": key, "topic": topic}
    log = begin_attempt(run, step, log, policy, state=PENDING, metadata=metadata)
    try:
        message = send(
            target, key, topic, payload, idempotency_key=idempotency_key(run.row.pk, step)
        )
    except HaltExecution:
        raise
    except BaseException as error:  # SystemExit & co. too: recorded, then let through
        retry_or_stall(run, log, error, policy)
    message_id = message.pk if isinstance(message.pk, int) else str(message.pk)
    run.steps.complete_later(log, state=COMPLETED, completed_at=clock.now(), result=message_id)
    return message_id
