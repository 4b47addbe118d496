"""Django signals sent when a workflow or a step changes state, for your own alerting and metrics.

Every signal is sent once per transition, after the transaction that recorded it committed: a
receiver sees the committed state, and a transition that rolled back sends nothing. When a pass
runs inside your own ``transaction.atomic()`` block (``perform_now`` in a view's transaction, say),
the signal waits for that block to commit (``transaction.on_commit``).

Receivers run in the worker, after the pass wrote the state (so a receiver can never undo or
delay the transition). A receiver that raises is logged on the ``chrono_forge`` logger and the
others still run; it never breaks the pass. A signal with no receivers costs nothing (no query,
no callback).

``sender`` is the workflow class (``None`` in ``workflow_stalled`` for a row whose class is not
registered in the worker). Every signal has ``workflow``: the :class:`~chrono_forge.models.Workflow`
row, loaded with the columns a pass needs (any other field is loaded on access).

==========================  ===============================================================
signal                      sent when, with (besides ``sender`` and ``workflow``)
==========================  ===============================================================
``workflow_started``        the first pass took the lock (``started_at`` was set)
``workflow_completed``      the run completed
``workflow_failed``         a workflow-level error used up the class retry policy; ``error``
``workflow_stalled``        the run stalled for an operator: ``error``, ``step_name`` (the
                            failed step, or ``None`` for a workflow-level cause)
``workflow_cancelled``      the run was cancelled (by ``cancel`` or by its parent's cancel):
                            ``reason``. Sent by the code that cancelled it, once per
                            cancelled run (children included)
``step_failed``             a step is failed for good (retries used up, a result that cannot be
                            stored, a ``wait_until`` timeout): ``step_name``, ``error``,
                            ``attempt``
``step_retry_scheduled``    a step's attempt failed and a retry is due: ``step_name``, ``error``,
                            ``attempt`` (the one that failed), ``retry_at``
==========================  ===============================================================

Example::

    from django.dispatch import receiver
    from chrono_forge.signals import workflow_stalled

    @receiver(workflow_stalled)
    def page_someone(sender, workflow, error, step_name, **kwargs):
        alerts.send(f"{workflow} stalled at {step_name}: {error}")
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .dispatch import in_user_transaction

logger = logging.getLogger("chrono_forge")

#: The first pass of a workflow took the lock (``started_at`` was set). Arguments: ``workflow``.
workflow_started = Signal()
#: The workflow completed. Arguments: ``workflow``.
workflow_completed = Signal()
#: A workflow-level error used up the class retry policy. Arguments: ``workflow``, ``error``.
workflow_failed = Signal()
#: The workflow stalled for an operator. Arguments: ``workflow``, ``error``, ``step_name``.
workflow_stalled = Signal()
#: The workflow was cancelled (itself, or with its parent). Arguments: ``workflow``, ``reason``.
workflow_cancelled = Signal()
#: A step is failed for good. Arguments: ``workflow``, ``step_name``, ``error``, ``attempt``.
step_failed = Signal()
#: A step's attempt failed and a retry is due. Arguments: ``workflow``, ``step_name``, ``error``,
#: ``attempt``, ``retry_at``.
step_retry_scheduled = Signal()

NAMES = {
    workflow_started: "workflow_started",
    workflow_completed: "workflow_completed",
    workflow_failed: "workflow_failed",
    workflow_stalled: "workflow_stalled",
    workflow_cancelled: "workflow_cancelled",
    step_failed: "step_failed",
    step_retry_scheduled: "step_retry_scheduled",
}


def send(signal: Signal, sender: Any, *, using: str, **kwargs: Any) -> None:
    """Send ``signal`` now, or when the application's open ``atomic()`` block commits.

    Call it after the write that recorded the transition committed (or inside the atomic block
    that writes it: then it waits for that block). Nothing happens without receivers.
    """
    if not signal.has_listeners(sender):
        return
    deliver = partial(_deliver, signal, sender, kwargs)
    if in_user_transaction(using):
        transaction.on_commit(deliver, using=using)
    else:
        deliver()


def _deliver(signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
    for receiver, response in signal.send_robust(sender, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "chrono_forge: a receiver of %s (%s) raised %s: %s; the workflow is unaffected",
                NAMES.get(signal, "a signal"),
                getattr(receiver, "__qualname__", receiver),
                type(response).__name__,
                response,
                exc_info=(type(response), response, response.__traceback__),
            )
