"""``receive``: consume the oldest pending message of a topic, exactly once; park until one comes.

Step name ``receive$<name or topic>``; metadata ``topic``, ``name``, ``timeout_at`` (with a
timeout, fixed at the first call) and, once resolved, ``message_id`` (the message it consumed) or
``timed_out``. The step's ``result`` is the consumed payload.

* A completed step returns its stored result: a replay reads no message and costs no statement.
* Otherwise the oldest pending message of the topic (by id, which is commit order) is taken: the
  step's completion (its result, the message id) and the message's ``consumed_by``/``consumed_at``
  commit in one transaction, so a crash before that commit leaves the message pending and the step
  open (the next pass takes the same message), and after it the step replays.
* Nothing there: the attempt is recorded (INSERT on the first call) and the run parks with nothing
  scheduled, ``parked_on`` naming the step, exactly like ``continue_if``; a send wakes it. With a
  ``timeout``, it is scheduled for ``timeout_at`` instead; a pass at or after it finds nothing,
  completes the step with ``None`` and returns ``None`` (replays too).

A message that arrived before the ``receive`` ran is simply found by it. The pass holds the
workflow's lock throughout and only a pass consumes, so no two receives can take one message.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction

from .. import clock
from ..exceptions import HaltExecution, InvalidStepArgument
from ..models import Message
from ..payloads import json_pk
from ..steps import COMPLETED, PENDING, duration_arg
from ..validation import step_name, validate_topic

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow

#: Step metadata: the id of the message a receive consumed, and the mark of one that timed out.
MESSAGE_ID = "message_id"
TIMED_OUT = "timed_out"


def receive(
    workflow: DurableWorkflow,
    topic: str,
    *,
    timeout: timedelta | float | None = None,
    name: str | None = None,
) -> Any:
    run = workflow._pass
    try:
        validate_topic(topic)
    except (TypeError, ValueError) as error:
        raise InvalidStepArgument(f"receive: {error}") from None
    step = step_name("receive", name if name is not None else topic)
    run.claim_step(step)
    # 0 checks once; a negative timeout is a bug in the caller's arithmetic.
    delay = (
        None
        if timeout is None
        else duration_arg(timeout, where=step, what="timeout", non_negative=True)
    )

    log = run.steps.get(step)
    if log is not None and log.state == COMPLETED:
        return log.result
    now = clock.now()
    metadata = dict(log.metadata or {}) if log is not None else {"topic": topic, "name": name}
    if delay is not None and "timeout_at" not in metadata:
        metadata["timeout_at"] = (now + delay).isoformat()
    timeout_at = (
        datetime.fromisoformat(str(metadata["timeout_at"])) if "timeout_at" in metadata else None
    )

    # Read outside a transaction (a SELECT-only transaction would take SQLite's write lock): the
    # pass holds the run's lock and only a pass consumes, so the message stays pending meanwhile.
    message = Message.objects.next_for(run.row.pk, topic).only("id", "payload").first()
    if message is not None:
        with transaction.atomic(using=run.db):  # the step's completion and the consumption
            log = run.steps.record_attempt(
                step,
                log,
                metadata={**metadata, MESSAGE_ID: json_pk(message.pk)},
                state=COMPLETED,
                completed_at=now,
                result=message.payload,
            )
            taken = Message.objects.filter(pk=message.pk, consumed_at__isnull=True).update(
                consumed_by=log.pk, consumed_at=now
            )
            if taken != 1:  # only a pass holding the lock consumes: a broken invariant
                raise RuntimeError(f"{step}: message {message.pk} was consumed concurrently")
        return message.payload
    if timeout_at is not None and now >= timeout_at:
        run.steps.record_attempt(
            step,
            log,
            metadata={**metadata, TIMED_OUT: True},
            state=COMPLETED,
            completed_at=now,
            result=None,
        )
        return None
    run.steps.record_attempt(step, log, metadata=metadata, state=PENDING)
    if timeout_at is not None:
        run.continue_at(timeout_at)
        raise HaltExecution()
    raise run.park(step)  # no continuation: next_run_at stays None, parked_on names the receive
