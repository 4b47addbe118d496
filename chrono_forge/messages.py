"""Sending a message to a run: ``Cls.send(key, topic, payload)`` (and ``Workflow.send``, the
``chrono_forge send`` command, ``self.send_to`` inside a workflow).

A send validates everything first (nothing is read or stored for bad input), then, in one
transaction on chrono_forge's database:

1. locks the workflow row (``SELECT ... FOR UPDATE``): an unknown key or a completed run is refused
   here, and concurrent sends to one run queue behind each other, so the order of the messages'
   ids is their commit order (``receive`` consumes by id);
2. with an ``idempotency_key`` already used on this run, returns that first message (nothing is
   stored, nothing is woken; even once the run completed, so a webhook's retry is answered);
3. records the wake-up exactly as ``resume()`` does (:meth:`WorkflowQuerySet.record_wake
   <chrono_forge.models.WorkflowQuerySet.record_wake>`): an idle run becomes due now, a running
   one gets ``wake_requested`` so the pass that holds it publishes a continuation when it
   releases (a message that lands while a ``receive`` is parking is not lost);
4. INSERTs the message.

The delivery of the pass is enqueued in the same transaction when the queue is in the same
database, else right after the commit (a lost delivery leaves the run due: the overdue sweep
re-sends it). Inside the caller's ``transaction.atomic()`` the message and the wake-up commit or
roll back with the caller's own writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction

from . import clock, conf, dispatch
from .exceptions import UnknownWorkflowError, WorkflowFinishedError
from .models import Message, Workflow
from .validation import validate_idempotency_key, validate_key, validate_payload, validate_topic

if TYPE_CHECKING:  # pragma: no cover
    from .workflow import DurableWorkflow

#: States a message can still be consumed in: running and idle runs, and failed or stalled runs
#: (an operator retry runs them again). Anything else (completed, ...) is finished.
ACCEPTING_STATES = (*Workflow.EXECUTABLE_STATES, *Workflow.RETRYABLE_STATES)


def send(
    workflow_class: type[DurableWorkflow],
    key: str,
    topic: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
) -> Message:
    """Store a message for ``workflow_class(key)`` and wake the run; see the module docstring."""
    job_class = workflow_class.job_class()
    validate_key(key, child=True)  # branch children (keys with '$') receive messages too
    validate_topic(topic)
    idempotency_key = validate_idempotency_key(idempotency_key)
    payload = validate_payload(payload)

    with dispatch.with_enqueue():
        with transaction.atomic(using=conf.database(), savepoint=False):
            row = (
                Workflow.objects.select_for_update()
                .only("id", "job_class", "key", "state")
                .filter(job_class=job_class, key=key)
                .one()
            )
            if row is None:
                raise UnknownWorkflowError(
                    f"{workflow_class.__qualname__}({key}) does not exist: no message was stored "
                    f"(start it with {workflow_class.__qualname__}.perform_later first)"
                )
            if idempotency_key is not None:  # a repeat is answered even once the run finished
                first = Message.objects.filter(
                    workflow_id=row.pk, idempotency_key=idempotency_key
                ).one()
                if first is not None:
                    return first
            if row.state not in ACCEPTING_STATES:
                raise WorkflowFinishedError(
                    f"{row} is {row.state}: nothing would consume the {topic!r} message, so it "
                    "was not stored"
                )
            now = clock.now()
            Workflow.objects.filter(pk=row.pk).record_wake(now)
            message = Message.objects.create(
                workflow_id=row.pk,
                topic=topic,
                payload=payload,
                idempotency_key=idempotency_key,
                created=now,
            )
        if row.state in Workflow.EXECUTABLE_STATES:  # a failed/stalled run waits for its retry
            dispatch.enqueue(row.job_class, row.key)
    return message
