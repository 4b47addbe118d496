"""``DurableWorkflow``: the class users subclass, its enqueue API and its durable primitives.

The pass lifecycle lives in :mod:`chrono_forge.executor`; each primitive lives in its own module
under :mod:`chrono_forge.primitives`. The methods here are thin, typed entry points.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import IntegrityError, transaction

from . import clock, conf, dispatch, registry
from .exceptions import (
    EnqueueError,
    ResultNotReadyError,
    ResultTimeout,
    WaitForResultInWorkflowError,
    WorkflowNotCancellableError,
    WorkflowNotRetryableError,
)
from .executor import Delivery, Pass, current_pass
from .messages import send
from .models import Message, Workflow
from .primitives import branch as _branch
from .primitives import continue_if as _continue_if
from .primitives import durably_execute as _durably_execute
from .primitives import durably_repeat as _durably_repeat
from .primitives import merge as _merge
from .primitives import patched as _patched
from .primitives import receive as _receive
from .primitives import results as _results
from .primitives import send_to as _send_to
from .primitives import wait as _wait
from .primitives import wait_until as _wait_until
from .retry import AnyRetryPolicy, RetryPolicy, coerce
from .validation import (
    check_perform_arguments,
    check_workflow_class,
    validate_key,
    validate_kwargs,
    validate_options,
    validate_reason,
)

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

Method = str | Callable[..., Any]
RetryPolicyLike = AnyRetryPolicy | Sequence[RetryPolicy] | None


def _retry_states(resume_cancelled: bool) -> tuple[str, ...]:
    cancelled = (Workflow.STATE.cancelled,) if resume_cancelled else ()
    return (*Workflow.RETRYABLE_STATES, *cancelled)


def resolve_workflow_class(job_class: str) -> type[DurableWorkflow]:
    """The workflow class registered under ``job_class`` (:mod:`chrono_forge.registry`), else
    :class:`~chrono_forge.exceptions.UnregisteredWorkflowClass`. Never imports a module."""
    return registry.resolve(job_class)


def _positive_duration(value: Any, what: str) -> timedelta:
    """A positive, finite duration (timedelta or seconds), else a TypeError/ValueError naming it."""
    try:
        delta = conf.as_duration(value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{what}: {error}") from None
    if delta <= timedelta(0):
        raise ValueError(f"{what} must be greater than 0, got {value!r}")
    return delta


class DurableWorkflow:
    """Subclass it and write ``perform(self, *, ...)`` with durable primitives.

    A run is identified by ``(job_class, key)``; every pass replays ``perform`` from the top and
    each primitive answers from its checkpoint when it already completed.

    Optionally define ``on_cancel(self, reason)``: the compensation of a cancelled run (release a
    reservation, notify), run once as a durable step after the cancellation is recorded, with the
    cancel's reason, retried per ``on_cancel_retry_policy`` (see :mod:`chrono_forge.on_cancel`).
    It runs in its own delivery, never beside a step body of its run; it must not call the durable
    primitives, and changes to ``self.context`` are not saved. Example::

        class OrderWorkflow(DurableWorkflow):
            on_cancel_retry_policy = RetryPolicy(max_attempts=5)

            def on_cancel(self, reason):
                release_stock(self.workflow.kwargs["order_id"], why=reason)
    """

    #: Class default retry policy for steps and uncaught workflow-level errors (a list: composite).
    retry_policy: ClassVar[RetryPolicyLike] = None
    #: Retry policy of the ``on_cancel`` hook; default: ``retry_policy``, else the step default.
    on_cancel_retry_policy: ClassVar[RetryPolicyLike] = None

    #: How long a run may take, counted from its first pass: one still unfinished then is
    #: cancelled with the reason ``deadline exceeded`` (a ``DeadlineExceeded`` in ErrorLog), its
    #: branch children too, wherever it waits. A positive ``timedelta``; None (the default): no
    #: deadline of its own (a branch child keeps its parent's). ``options={"deadline": seconds}``
    #: overrides it per run. Example: ``deadline = timedelta(days=7)``.
    deadline: ClassVar[timedelta | None] = None

    workflow: Workflow
    key: str
    context: Context
    _pass: Pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_workflow_class(cls)  # a class that fails its checks is never registered
        registry.register(cls)

    def perform(self, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define perform(self, *, ...)")

    # -- identity ------------------------------------------------------------------------------
    @classmethod
    def job_class(cls) -> str:
        job_class = registry.job_class_of(cls)
        if job_class is None:
            raise TypeError(
                f"{cls.__qualname__} is defined inside a function; workflow classes must be "
                "defined at module level, in a module the workers import"
            )
        return job_class

    @classmethod
    def workflow_retry_policy(cls) -> AnyRetryPolicy:
        return coerce(cls.retry_policy) or RetryPolicy.workflow_default()

    @classmethod
    def on_cancel_policy(cls) -> AnyRetryPolicy:
        """The ``on_cancel`` hook's policy: ``on_cancel_retry_policy``, else the class's step
        policy (``retry_policy``, else ``RetryPolicy.step_default()``)."""
        return (
            coerce(cls.on_cancel_retry_policy)
            or coerce(cls.retry_policy)
            or RetryPolicy.step_default()
        )

    # -- enqueue API ---------------------------------------------------------------------------
    @classmethod
    def perform_later(
        cls, key: str, /, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Workflow:
        """Create the workflow row if missing (an existing key keeps its kwargs) and enqueue a pass.

        A new row is born scheduled (its first delivery's due time is in the INSERT: if the queue
        loses that delivery, ``resume-overdue`` sends it again) and the delivery carries the due
        time as its token; an existing key gets a wake-up (:meth:`Workflow.wake`). Inside
        ``transaction.atomic()`` the enqueue happens on commit. If the broker refuses the enqueue,
        :class:`~chrono_forge.exceptions.EnqueueError` says what was kept: nothing, when the queue
        shares chrono_forge's database (the row and the enqueue commit together); otherwise the new
        row, due now, which ``resume-overdue`` starts once it is overdue.
        """
        return cls._admit(key, args, kwargs, options, enqueue=True)

    @classmethod
    def perform_now(
        cls, key: str, /, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Workflow:
        """Create the workflow row if missing and run one pass inline, in this process.

        The pass runs until ``perform()`` returns or a primitive waits; a wait's continuation is
        enqueued as usual. Arguments as :meth:`perform_later`.

        Returns:
            The ``Workflow`` row, read again after the pass.

        Example::

            row = OrderWorkflow.perform_now("order-124", order_id=124)
            row.state   # "completed", or "idle" when it is waiting
        """
        row = cls._admit(key, args, kwargs, options)
        cls._execute(row.key)
        return Workflow.objects.get(pk=row.pk)

    @classmethod
    def retry_now(
        cls, key: str, /, *args: Any, resume_cancelled: bool = False, **kwargs: Any
    ) -> Workflow:
        """Retry a failed or stalled workflow with one pass inline.

        Failed steps get a fresh retry budget; completed steps keep their results.

        Args:
            key: the workflow's key.
            resume_cancelled: also retry a cancelled run (see :meth:`retry_later`).

        Raises:
            WorkflowNotRetryableError: the workflow does not exist or is not failed or stalled
                (or cancelled, with ``resume_cancelled``).

        Example::

            OrderWorkflow.retry_now("order-1")
        """
        row = cls._retryable_row(key, args, kwargs, resume_cancelled=resume_cancelled)
        internal: dict[str, Any] = {"resume_cancelled": True} if resume_cancelled else {}
        cls._execute(row.key, retry_workflow=True, **internal)
        return Workflow.objects.get(pk=row.pk)

    @classmethod
    def retry_later(
        cls, key: str, /, *args: Any, resume_cancelled: bool = False, **kwargs: Any
    ) -> Workflow:
        """Retry a failed or stalled workflow through the queue.

        As :meth:`retry_now`, but the pass runs on a worker. The request is recorded as the row's
        due time and the delivery carries it as its token: a lost delivery is re-sent by the overdue
        sweep, and a duplicate exits once the retry ran.

        Args:
            key: the workflow's key.
            resume_cancelled: also retry a cancelled run, which is refused otherwise. The run
                replays from the top: completed steps return their stored results, the step the
                cancel interrupted runs again, failed steps get a fresh budget. Its branch children
                stay cancelled (a merge over them is held until each is retried the same way).

        Example::

            OrderWorkflow.retry_later("order-1")
            OrderWorkflow.retry_later("order-2", resume_cancelled=True)   # cancelled by mistake
        """
        row = cls._retryable_row(key, args, kwargs, resume_cancelled=resume_cancelled)
        now = clock.now()
        states = _retry_states(resume_cancelled)
        internal: dict[str, Any] = {"resume_cancelled": True} if resume_cancelled else {}
        with dispatch.with_enqueue():
            # A forced retry supersedes a pending on_cancel hook (parked_on named its step): the
            # run resumes, so there is nothing to compensate, and the sweep re-sends a retry.
            requested = Workflow.objects.filter(pk=row.pk, state__in=states).update(
                next_run_at=now, parked_on=None
            )
            if not requested:
                raise WorkflowNotRetryableError(f"{row} is no longer {' or '.join(states)}")
            dispatch.enqueue(
                row.job_class,
                row.key,
                retry_workflow=True,
                token=dispatch.token_for(now),
                **internal,
            )
        row.next_run_at = now
        return row

    @classmethod
    def send(
        cls, key: str, topic: str, payload: Any, *, idempotency_key: str | None = None
    ) -> Message:
        """Deliver ``payload`` to the run ``key`` under ``topic``, durably, for a
        :meth:`receive` to consume, and wake the run exactly like ``Workflow.resume()``.

        The message and the wake-up commit together (inside ``transaction.atomic()``, with the
        caller's own writes: a rollback drops both). Messages of one topic are consumed in the
        order their sends committed. A send while a pass runs is not lost: that pass runs again
        as soon as it releases.

        Args:
            key: the run's key (branch children's keys included).
            topic: a non-empty string without ``$``, at most 200 characters.
            payload: a JSON value (dicts, lists, str, numbers, bools, None), at most
                ``MESSAGE_MAX_BYTES`` as JSON.
            idempotency_key: a non-empty string unique per run; a send repeating it returns the
                first message and stores nothing (a webhook's event id, for instance).

        Returns:
            The stored ``Message`` (or the first one with that ``idempotency_key``).

        Raises:
            UnknownWorkflowError: no run of this class has that key.
            WorkflowFinishedError: the run is completed; nothing would consume the message.
            TypeError, ValueError: bad arguments; nothing was read or stored.

        Example::

            # in a payment provider's webhook view
            OrderWorkflow.send(f"order-{order_id}", "payment", {"amount": 5},
                               idempotency_key=event["id"])
        """
        return send(cls, key, topic, payload, idempotency_key=idempotency_key)

    @classmethod
    def cancel(cls, key: str, /, *, reason: str = "") -> Workflow:
        """Cancel a run and its branch children (recursively).

        An idle, scheduled, parked, failed or stalled run is ``cancelled`` at once (a delivery
        still queued for it finds nothing to run); a running pass stops before its next step body
        and its release keeps ``cancelled``. Children go in keyset batches (flat memory). A run
        whose class defines ``on_cancel`` (and each such child) is scheduled for that hook, which
        runs once in its own delivery.

        Args:
            key: the workflow's key.
            reason: why (a str of at most 255 characters), shown in the admin and ``show``.

        Returns:
            The ``Workflow`` row, read again.

        Raises:
            WorkflowNotCancellableError: no such run (``error.state`` is None), or it already
                finished (``completed`` or ``cancelled``, in ``error.state``).

        Example::

            OrderWorkflow.cancel("order-123", reason="refunded by hand")
        """
        validate_key(key, child=True)
        reason = validate_reason(reason)
        row = Workflow.objects.filter(job_class=cls.job_class(), key=key).one()
        if row is None:
            raise WorkflowNotCancellableError(
                f"{cls.job_class()}({key}) does not exist", state=None
            )
        return row.cancel(reason)

    # -- results ---------------------------------------------------------------------------------
    @classmethod
    def result(cls, key: str, /) -> Any:
        """The value ``perform()`` returned for the run ``key``, as stored when it completed.

        Args:
            key: the workflow's key.

        Returns:
            The stored JSON value (``None`` when ``perform()`` returned nothing).

        Raises:
            Workflow.DoesNotExist: no run of this class has that key.
            ResultNotReadyError: the run has not completed (idle, running, failed, stalled or
                cancelled); its ``state`` attribute says which. ``workflow.result`` (the column)
                is ``None`` for such a run instead.

        Example::

            OrderWorkflow.perform_now("order-1", order_id=1)
            OrderWorkflow.result("order-1")   # {"total": 42}
        """
        validate_key(key, child=True)
        row = (
            Workflow.objects.filter(job_class=cls.job_class(), key=key)
            .values_list("state", "result")
            .one()
        )
        return cls._completed_result(key, row)

    @classmethod
    def wait_for_result(
        cls, key: str, /, *, timeout: timedelta | float = 60, interval: timedelta | float = 0.1
    ) -> Any:
        """Poll until the run ``key`` completes and return its result: for scripts and tests.

        It blocks the calling thread, so it refuses to run inside a workflow (a pass, or a step
        body): a workflow reads its children's results with :meth:`branch_results` after a merge.

        Args:
            key: the workflow's key.
            timeout: how long to wait, a positive ``timedelta`` or seconds.
            interval: the time between two reads of the row, a positive ``timedelta`` or seconds.

        Returns:
            The stored result, as :meth:`result` returns it.

        Raises:
            WaitForResultInWorkflowError: called inside a workflow.
            Workflow.DoesNotExist: no run of this class has that key.
            ResultNotReadyError: the run became failed, stalled or cancelled (it will not
                complete unless an operator retries it), with its ``state``.
            ResultTimeout: still unfinished after ``timeout`` (a ``ResultNotReadyError`` and a
                ``TimeoutError``).

        Example::

            OrderWorkflow.perform_later("order-1", order_id=1)
            total = OrderWorkflow.wait_for_result("order-1", timeout=30)["total"]
        """
        if current_pass() is not None:
            raise WaitForResultInWorkflowError(
                f"{cls.__qualname__}.wait_for_result({key!r}) was called inside a workflow: a "
                "pass must not block on another run; spawn it in a branch, merge it and read "
                "self.branch_results(...) instead"
            )
        validate_key(key, child=True)
        wait = _positive_duration(timeout, "timeout")
        pause = _positive_duration(interval, "interval").total_seconds()
        deadline = time.monotonic() + wait.total_seconds()
        query = Workflow.objects.filter(job_class=cls.job_class(), key=key).values_list(
            "state", "result"
        )
        while True:
            row = query.one()
            if row is None or row[0] not in Workflow.EXECUTABLE_STATES:
                return cls._completed_result(key, row)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(
                    f"{cls.__qualname__}({key}) is still {row[0]} after {wait.total_seconds():g}s",
                    state=row[0],
                )
            time.sleep(min(pause, remaining))

    @classmethod
    def _completed_result(cls, key: str, row: tuple[str, Any] | None) -> Any:
        if row is None:
            raise Workflow.DoesNotExist(f"{cls.__qualname__}({key}) does not exist")
        state, result = row
        if state != Workflow.STATE.completed:
            raise ResultNotReadyError(
                f"{cls.__qualname__}({key}) is {state}; only a completed run has a result",
                state=state,
            )
        return result

    def branch_results(self, name: str, *, of: int = 1000) -> Iterator[tuple[str, Any]]:
        """The results of a merged branch's children: ``(child_key, result)`` by primary key.

        Read after the branch's merge completed. Children are streamed in pages of ``of`` rows
        (memory holds one page, whatever the number of children) and every pass, a replay
        included, reads the same sequence. It is a read, not a step: it records nothing.

        Args:
            name: the branch name given to :meth:`branch`.
            of: the page size (rows per query).

        Returns:
            An iterator of ``(child_key, result)``, the child's full key
            (``<parent key>$<branch>$<name>``) and the value its ``perform()`` returned.

        Raises:
            UnknownBranchError: no branch of that name was opened.
            UnmergedBranchError: the branch is not merged (yet). Both are raised at the call and
                stall the workflow when uncaught.

        Example::

            self.branch("items", self.dispatch_items, automerge=True)
            total = sum(result["amount"] for _key, result in self.branch_results("items"))
            return {"total": total}
        """
        return _results.branch_results(self, name, of=of)

    # -- internals -------------------------------------------------------------------------------
    @classmethod
    def _admit(
        cls, key: Any, args: tuple, kwargs: dict[str, Any], options: Any, *, enqueue: bool = False
    ) -> Workflow:
        """The workflow row, created if missing and born scheduled (``next_run_at`` in the INSERT);
        with ``enqueue``, a new row gets its first delivery and an existing one a wake-up."""
        job_class = cls.job_class()
        validate_key(key)
        kwargs = validate_kwargs(args, kwargs)
        options = validate_options(options, kwargs=kwargs)
        if kwargs:
            check_perform_arguments(cls, kwargs)
        # one(): a unique key's lookup, without first()'s ORDER BY id
        existing = Workflow.objects.filter(job_class=job_class, key=key).one()
        if existing is not None:
            return cls._wake(
                existing, on=enqueue
            )  # the row keeps the arguments it was created with
        if not kwargs:
            check_perform_arguments(cls, kwargs)
        now = clock.now()
        # The row and its first pass commit together when the queue is in our database, otherwise
        # the row commits first. Either way the row is due now (next_run_at): the overdue sweep
        # starts it if the enqueue fails or the broker loses the delivery (a deleted queue row, a
        # worker that died holding it), so never a row that nothing will run.
        together = enqueue and dispatch.transactional()
        try:
            with transaction.atomic(using=conf.database()):
                row = Workflow.objects.create(
                    job_class=job_class,
                    key=key,
                    kwargs=kwargs,
                    options=options,
                    next_run_at=now,
                    created=now,
                    modified=now,
                )
                if together:  # a refused enqueue rolls the row back: nothing is stored
                    return cls._enqueue_first(
                        row, stored="nothing was stored", token=dispatch.token_for(now)
                    )
        except IntegrityError:  # created concurrently: the first one wins
            row = Workflow.objects.get(job_class=job_class, key=key)
            return cls._wake(row, on=enqueue)
        if enqueue:
            stored = "the workflow is stored, due now: `chrono_forge resume-overdue` starts it"
            return cls._enqueue_first(row, stored=stored, token=dispatch.token_for(now))
        return row

    @staticmethod
    def _enqueue_first(row: Workflow, *, stored: str, token: str) -> Workflow:
        try:
            dispatch.enqueue(row.job_class, row.key, token=token)
        except Exception as error:
            raise EnqueueError(
                f"{row}: the broker refused the pass ({type(error).__name__}: {error}); "
                f"{stored}. Call perform_later again once the broker is back."
            ) from error
        return row

    @staticmethod
    def _wake(row: Workflow, *, on: bool) -> Workflow:
        if on:
            try:
                row.wake()
            except Exception as error:
                raise EnqueueError(
                    f"{row}: the broker refused the pass ({type(error).__name__}: {error}); "
                    "the existing workflow is unchanged but for the wake-up recorded on it (an "
                    "idle row is due now: `chrono_forge resume-overdue` delivers it). Call "
                    "perform_later again once the broker is back."
                ) from error
        return row

    @classmethod
    def _retryable_row(
        cls, key: Any, args: tuple, kwargs: dict[str, Any], *, resume_cancelled: bool = False
    ) -> Workflow:
        validate_key(key, child=True)
        validate_kwargs(args, kwargs)
        if kwargs:
            raise TypeError(f"retry takes only the workflow key; got {sorted(kwargs)}")
        if not isinstance(resume_cancelled, bool):
            raise TypeError(f"resume_cancelled must be a bool, got {resume_cancelled!r}")
        row = Workflow.objects.filter(job_class=cls.job_class(), key=key).first()
        if row is None:
            raise WorkflowNotRetryableError(f"{cls.job_class()}({key}) does not exist")
        if row.state == Workflow.STATE.cancelled and not resume_cancelled:
            raise WorkflowNotRetryableError(
                f"{row} is cancelled; retry it only on purpose, with resume_cancelled=True "
                "(`chrono_forge retry --force`)"
            )
        if row.state not in _retry_states(resume_cancelled):
            raise WorkflowNotRetryableError(
                f"{row} is {row.state}; only failed or stalled workflows can be retried"
            )
        return row

    @classmethod
    def _execute(cls, key: str, **internal: Any) -> Workflow | None:
        return Delivery(cls, key, **internal).execute()

    @classmethod
    def _bind(cls, row: Workflow, run: Pass) -> DurableWorkflow:
        instance = cls()
        instance.workflow = row
        instance.key = row.key
        instance.context = run.context
        instance._pass = run
        return instance

    def _before_completion(self) -> None:
        """The completion gate: hooks that must pass before the workflow may complete."""
        if self._pass.branches:  # every branch opened in this pass must be merged
            _branch.ensure_merged(self)

    # -- primitives ----------------------------------------------------------------------------
    def durably_execute(
        self,
        method: Method,
        *,
        retry_policy: RetryPolicyLike = None,
        name: str | None = None,
        timeout: timedelta | float | None = None,
    ) -> Any:
        """Run ``method`` once, durably, and return its result.

        The attempt is committed before the body runs; the completion and the JSON result with the
        pass's next write. A replay returns the stored result without calling ``method`` again. A
        failure is recorded in ``ErrorLog`` and retried by continuation after the policy's backoff
        (the worker is released); when the budget is used up the workflow is stalled.

        Args:
            method: a bound method (``self.charge``) or a method name (``"charge"``), called
                without arguments.
            retry_policy: a ``RetryPolicy`` or a list of them (a composite); default: the class's
                ``retry_policy``, else ``RetryPolicy.step_default()`` (3 attempts).
            name: the step name (``durably_execute$<name>``); default: the method's name. A replay
                finds the step by this name, so keep it stable across deploys.
            timeout: a ``timedelta`` or seconds (> 0): an attempt still running past it counts
                as a failed attempt (``StepTimeout``, charged to ``retry_policy``). In a worker's
                main thread the body is interrupted by ``SIGALRM``; elsewhere a late return counts
                as timed out, and an attempt whose worker died or hung in it is recorded as timed
                out by the pass the reaper starts.

        Returns:
            The method's return value (JSON, at most ``RESULT_MAX_BYTES``), stored on first success.

        Example::

            charge = self.durably_execute(self.charge)
            self.durably_execute(self.notify, name="notify_customer",
                                 retry_policy=RetryPolicy(max_attempts=5, retry_on=[TimeoutError]))
            self.durably_execute(self.call_gateway, timeout=timedelta(seconds=30))
        """
        return _durably_execute.durably_execute(
            self, method, retry_policy=retry_policy, name=name, timeout=timeout
        )

    # The primitives below live in their own modules; these methods are their typed entry points.
    def wait(self, duration: timedelta | float, name: str) -> None:
        """Sleep durably: end the pass and continue at a deadline, without holding a worker.

        The deadline is fixed the first time the step runs and never moves (a replay, a deploy or an
        early wake-up does not restart the clock). ``Workflow.next_run_at`` is the deadline.

        Args:
            duration: a ``timedelta`` or seconds; 0 is a plain checkpoint, a negative one an error.
            name: the step name (``wait$<name>``), unique within the workflow.

        Example::

            self.wait(timedelta(days=1), "survey_delay")
        """
        return _wait.wait(self, duration, name)

    def wait_until(
        self,
        condition: Method,
        *,
        timeout: timedelta | float = timedelta(hours=1),
        check_interval: timedelta | float = timedelta(minutes=15),
        retry_policy: RetryPolicyLike = None,
        name: str | None = None,
    ) -> Any:
        """Poll ``condition`` by continuation until it is true or ``timeout`` passes.

        Each poll is one pass; between polls nothing runs and no worker is held. The timeout is
        fixed at the first poll, and the last poll happens exactly at it. A condition that raises
        is retried only per this call's ``retry_policy``.

        Args:
            condition: a method name or a bound method taking no argument; true ends the wait.
            timeout: how long to poll (``timedelta`` or seconds); 0 or less checks once.
            check_interval: the time between polls (positive).
            retry_policy: for errors raised by the condition; default
                ``RetryPolicy.wait_default()``, which retries nothing (the class's policy is not
                inherited).
            name: the step name (``wait_until$<name>``); default: the condition's name.

        Returns:
            ``True`` once the condition held (replays return it without polling).

        Raises:
            WaitConditionNotMet: still false at the timeout. Uncaught it stalls the workflow;
                caught, the workflow takes another path (replays raise it again, without polling).

        Example::

            try:
                self.wait_until("kyc_approved", timeout=timedelta(days=2),
                                check_interval=timedelta(hours=1))
            except WaitConditionNotMet:
                self.durably_execute(self.escalate_to_support)
        """
        return _wait_until.wait_until(
            self,
            condition,
            timeout=timeout,
            check_interval=check_interval,
            retry_policy=retry_policy,
            name=name,
        )

    def continue_if(self, condition: Method, *, name: str | None = None) -> bool:
        """Wait for an event: park with nothing scheduled until ``condition`` is true.

        The condition is evaluated once per pass. False: the pass ends and ``next_run_at`` is
        ``None``; the code that learns about the event wakes the run with
        ``Cls.perform_later(key)`` or ``Workflow.resume()``. A condition that raises stalls the
        workflow (it is not retried).

        Args:
            condition: a method name or a bound method taking no argument.
            name: the step name (``continue_if$<name>``); default: the condition's name.

        Returns:
            ``True`` once the condition held.

        Example::

            self.continue_if("payment_confirmed", name="payment_webhook")

            # elsewhere, in the webhook view:
            OrderWorkflow.perform_later(f"order-{order_id}")
        """
        return _continue_if.continue_if(self, condition, name=name)

    def receive(
        self,
        topic: str,
        *,
        timeout: timedelta | float | None = None,
        name: str | None = None,
    ) -> Any:
        """Consume the oldest pending message of ``topic`` sent to this run (:meth:`send`).

        Each message is consumed exactly once: the step records which message it took, so a
        replay returns the same payload without reading or consuming another. With no message
        pending the run parks with nothing scheduled (like :meth:`continue_if`) until a send wakes
        it; a message sent before the ``receive`` ran is found at once.

        Args:
            topic: the topic to consume (a non-empty string without ``$``).
            timeout: ``None`` waits for ever; a ``timedelta`` or seconds (0 checks once) waits at
                most that long, fixed at the first call.
            name: the step name (``receive$<name>``); default: the topic. Receiving the same topic
                several times (a loop) needs a distinct name per call.

        Returns:
            The message's payload, or ``None`` when the timeout passed first.

        Example::

            payment = self.receive("payment")
            for i in range(3):
                answer = self.receive("answer", name=f"answer-{i}",
                                      timeout=timedelta(days=1))
        """
        return _receive.receive(self, topic, timeout=timeout, name=name)

    def send_to(
        self,
        workflow_class: type[DurableWorkflow],
        key: str,
        topic: str,
        payload: Any,
        *,
        name: str | None = None,
        retry_policy: RetryPolicyLike = None,
    ) -> Any:
        """Send a message to another run (:meth:`send`) as a durable step: sent once across
        replays, retries and crashes.

        Every attempt sends with the same idempotency key (this run and the step), so the target
        stores the message once even when the worker dies between the send and the step's
        completion. An unknown or completed target is a failed attempt, retried per
        ``retry_policy``, then the workflow stalls.

        Args:
            workflow_class: the target's class (a ``DurableWorkflow`` subclass).
            key: the target run's key.
            topic: the message's topic (a non-empty string without ``$``).
            payload: a JSON value, at most ``MESSAGE_MAX_BYTES``.
            name: the step name (``send_to$<name>``); default: the topic. Sending one topic
                several times in a pass needs a distinct name per call.
            retry_policy: for a refused send; default: the class's, else 3 attempts.

        Returns:
            The message's id (stored as the step's result).

        Example::

            self.send_to(ShippingWorkflow, f"ship-{order_id}", "paid", {"order_id": order_id})
        """
        return _send_to.send_to(
            self, workflow_class, key, topic, payload, name=name, retry_policy=retry_policy
        )

    def durably_repeat(
        self,
        method: Method,
        *,
        every: timedelta | float,
        till: Any,
        start_at: Any = None,
        retry_policy: RetryPolicyLike = None,
        timeout: timedelta | float = timedelta(hours=1),
        on_error: str = "continue",
        name: str | None = None,
    ) -> None:
        """Run ``method`` on a fixed grid of ticks until ``till`` is true.

        Ticks fall at ``start_at + n * every``; each tick has its own log and retry budget.
        ``till`` is checked before and after each tick. Ticks that could not start within
        ``timeout`` of their time (downtime) are skipped in one step and recorded as one summary
        row.

        Args:
            method: a method name or a bound method; it receives the tick's scheduled time (an aware
                datetime) when it accepts a positional argument.
            every: the interval, a ``timedelta`` or seconds, at least 1 second.
            till: a method name, a bound method, or a callable taking the context; true ends the
                repeat.
            start_at: an aware datetime for the first tick; default: when the step first runs.
            retry_policy: per tick; default: the class's ``retry_policy``, else 3 attempts.
            timeout: how late a tick may still start.
            on_error: ``"continue"`` (a tick that used its budget is marked failed and the schedule
                goes on) or ``"fail_workflow"`` (the workflow stalls).
            name: the step name (``durably_repeat$<name>``); default: the method's name.

        Example::

            self.durably_repeat(self.send_reminder, every=timedelta(days=3), till="delivered",
                                timeout=timedelta(hours=6))

            def send_reminder(self, scheduled_time):
                ...   # use scheduled_time as the idempotency key of the tick
        """
        return _durably_repeat.durably_repeat(
            self,
            method,
            every=every,
            till=till,
            start_at=start_at,
            retry_policy=retry_policy,
            timeout=timeout,
            on_error=on_error,
            name=name,
        )

    def branch(self, name: str, dispatch: Callable[[], Any], *, automerge: bool = False) -> None:
        """Open a branch: run ``dispatch`` once to spawn child workflows.

        ``dispatch`` calls :meth:`spawn` and :meth:`spawn_each`; when it returns the branch is
        sealed and a replay never calls it again. A branch must be merged before the workflow
        completes (``automerge=True`` or :meth:`merge_branches`), else ``UnmergedBranchError``
        stalls it.

        Args:
            name: the branch name (``branch$<name>``), part of every child's key.
            dispatch: a method name, a bound method or any callable taking no argument.
            automerge: merge the branch right after it seals (the pass waits there).

        Example::

            self.branch("fulfil", self.dispatch_items, automerge=True)

            def dispatch_items(self):
                self.spawn("invoice", InvoiceWorkflow, order_id=self.order_id)
        """
        return _branch.branch(self, name, dispatch, automerge=automerge)

    def spawn(self, name: str, workflow_class: type[DurableWorkflow], /, **kwargs: Any) -> None:
        """Inside a branch's dispatch: create one child workflow and enqueue it.

        Args:
            name: the child's name; its key is ``<parent key>$<branch>$<name>``.
            workflow_class: a ``DurableWorkflow`` subclass.
            **kwargs: the child's ``perform()`` arguments (JSON values).

        Raises:
            NotInBranchError: called outside a ``branch`` dispatch.

        Example::

            self.spawn("invoice", InvoiceWorkflow, order_id=self.order_id)
        """
        return _branch.spawn(self, name, workflow_class, **kwargs)

    def spawn_each(
        self, name: str, source: Any, build: Callable[[Any], Any], *, of: int = 1000
    ) -> None:
        """Inside a branch's dispatch: one child workflow per item of ``source``.

        A QuerySet is streamed by primary key in batches of ``of`` (constant memory, a cursor
        persisted per batch so a crash resumes without gaps or duplicates); any other iterable by
        position.

        Args:
            name: the group's name; children are keyed
                ``<parent key>$<branch>$<name>_<pk or index>``.
            source: a QuerySet or an iterable.
            build: called with each item, returns ``(workflow_class, kwargs)``.
            of: the batch size.

        Example::

            self.spawn_each("items", Item.objects.filter(order_id=self.order_id),
                            lambda item: (ItemWorkflow, {"item_id": item.pk}))
        """
        return _branch.spawn_each(self, name, source, build, of=of)

    def merge_branches(
        self,
        *names: str,
        min_interval: timedelta | float = timedelta(seconds=5),
        max_interval: timedelta | float = timedelta(minutes=5),
    ) -> None:
        """Wait until every child of the named branches completed.

        The parent parks and is not replayed while it waits; one poller task watches the children
        (its cadence adapts between ``min_interval`` and ``max_interval``), re-enqueues children
        whose delivery was lost and wakes the parent when all completed. The parent's
        ``next_run_at`` holds the next poll's due time, so a lost poller makes it overdue and the
        overdue sweep re-arms one. A failed or stalled child holds the merge until it is retried.

        Args:
            *names: the branches to merge (opened earlier in this workflow).
            min_interval: the shortest time between two polls.
            max_interval: the longest time between two polls.

        Raises:
            UnknownBranchError: a name that no ``branch`` opened.

        Example::

            self.branch("a", self.dispatch_a)
            self.branch("b", self.dispatch_b)
            self.merge_branches("a", "b", max_interval=timedelta(minutes=1))
        """
        return _merge.merge_branches(
            self, *names, min_interval=min_interval, max_interval=max_interval
        )

    merge_branch = merge_branches

    # -- versioning ----------------------------------------------------------------------------
    def patched(self, change_id: str) -> bool:
        """Whether this run takes the changed code path: ``True`` for a run reaching this point
        for the first time under code that has the change, ``False`` for a run that went past
        this point under the old code (it keeps the old path).

        The first answer is decided from the replay frontier: when this pass has not yet replayed
        every step the run recorded before, the run is in old history and gets ``False``;
        otherwise ``True``. Either answer is stored in the marker ``patch$<change_id>`` (one
        INSERT), and every later pass returns it again without a statement.

        Args:
            change_id: names the change, unique within ``perform()``: a non-empty string without
                ``$``. Keep it for as long as the call stays in the code.

        Returns:
            ``True`` to take the new path, ``False`` to keep the old one.

        Raises:
            InvalidStepName: an empty or non-string id, or one containing ``$``.
            DuplicateStepName: the same id used twice in one pass.

        Example::

            self.durably_execute(self.charge)
            if self.patched("add-fraud-check"):   # deployed while orders were in flight
                self.durably_execute(self.fraud_check)
            self.durably_execute(self.ship)
        """
        return _patched.patched(self, change_id)

    def deprecate_patch(self, change_id: str) -> None:
        """Mark the place of a ``patched(change_id)`` whose old path was removed.

        Once no run that answered ``False`` is unfinished, replace ``if self.patched(id): new()``
        by ``self.deprecate_patch(id); new()``, and drop the call in a later deploy. It stores
        nothing and costs no statement; it keeps the id reserved (a ``patched`` of the same id in
        the same pass is a ``DuplicateStepName``).

        Args:
            change_id: the id the ``patched`` call used.

        Raises:
            InvalidStepName: an empty or non-string id, or one containing ``$``.

        Example::

            self.durably_execute(self.charge)
            self.deprecate_patch("add-fraud-check")
            self.durably_execute(self.fraud_check)
            self.durably_execute(self.ship)
        """
        return _patched.deprecate_patch(self, change_id)
