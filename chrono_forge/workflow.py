"""``DurableWorkflow``: the class users subclass, its enqueue API and its durable primitives.

The pass lifecycle lives in :mod:`chrono_forge.executor`; each primitive lives in its own module under
:mod:`chrono_forge.primitives`. The methods here are thin, typed entry points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import IntegrityError, transaction

from . import clock, conf, dispatch, registry
from .exceptions import EnqueueError, WorkflowNotRetryableError
from .models import Workflow
from .primitives import durably_execute as _durably_execute
from .retry import AnyRetryPolicy, RetryPolicy, coerce
from .validation import (
    check_workflow_class,
    validate_key,
    validate_kwargs,
    validate_options,
)

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context
    from .executor import Pass

Method = str | Callable[..., Any]
RetryPolicyLike = AnyRetryPolicy | Sequence[RetryPolicy] | None


def resolve_workflow_class(job_class: str) -> type[DurableWorkflow]:
    """The workflow class registered under ``job_class`` (:mod:`chrono_forge.registry`), else
    :class:`~chrono_forge.exceptions.UnregisteredWorkflowClass`. Never imports a module."""
    return registry.resolve(job_class)


class DurableWorkflow:
    """Subclass it and write ``perform(self, *, ...)`` with durable primitives.

    A run is identified by ``(job_class, key)``; every pass replays ``perform`` from the top and each
    primitive answers from its checkpoint when it already completed.
    """

    #: Class default retry policy for steps and for uncaught workflow-level errors (a list = composite).
    retry_policy: ClassVar[RetryPolicyLike] = None

    workflow: Workflow
    key: str
    context: Context
    _pass: Pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_workflow_class(cls)  # a class that fails its checks is never registered
        registry.register(cls)

    def perform(self, **kwargs: Any) -> None:  # pragma: no cover - abstract
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

    # -- enqueue API ---------------------------------------------------------------------------
    @classmethod
    def perform_later(
        cls, key: str, /, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Workflow:
        """Create the workflow row if missing (an existing key keeps its kwargs) and enqueue a pass.

        A new row is born scheduled (its first delivery's due time is in the INSERT: if the queue
        loses that delivery, ``resume-overdue`` sends it again) and the delivery carries the due time
        as its token; an existing key gets a wake-up (:meth:`Workflow.wake`). Inside
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
        """Create the workflow row if missing and run one pass inline."""
        row = cls._admit(key, args, kwargs, options)
        cls._execute(row.key)
        return Workflow.objects.get(pk=row.pk)

    @classmethod
    def retry_now(cls, key: str, /, *args: Any, **kwargs: Any) -> Workflow:
        """Retry a failed or stalled workflow with one pass inline."""
        row = cls._retryable_row(key, args, kwargs)
        cls._execute(row.key, retry_workflow=True)
        return Workflow.objects.get(pk=row.pk)

    @classmethod
    def retry_later(cls, key: str, /, *args: Any, **kwargs: Any) -> Workflow:
        """Retry a failed or stalled workflow through the queue.

        The request is recorded as the row's due time and the delivery carries it as its token: a
        lost delivery is re-sent by the overdue sweep, and a duplicate exits once the retry ran.
        """
        from .executor import token_for

        row = cls._retryable_row(key, args, kwargs)
        now = clock.now()
        with dispatch.with_enqueue():
            requested = Workflow.objects.filter(
                pk=row.pk, state__in=Workflow.RETRYABLE_STATES
            ).update(next_run_at=now)
            if not requested:
                raise WorkflowNotRetryableError(f"{row} is no longer failed or stalled")
            dispatch.enqueue(row.job_class, row.key, retry_workflow=True, token=token_for(now))
        row.next_run_at = now
        return row

    # -- internals -------------------------------------------------------------------------------
    @classmethod
    def _admit(
        cls, key: Any, args: tuple, kwargs: dict[str, Any], options: Any, *, enqueue: bool = False
    ) -> Workflow:
        """The workflow row, created if missing and born scheduled (``next_run_at`` in the INSERT);
        with ``enqueue``, a new row gets its first delivery and an existing one a wake-up."""
        from .executor import token_for

        job_class = cls.job_class()
        validate_key(key)
        kwargs = validate_kwargs(args, kwargs)
        options = validate_options(options)
        existing = Workflow.objects.filter(job_class=job_class, key=key).first()
        if existing is not None:
            return cls._wake(existing, on=enqueue)
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
                        row, stored="nothing was stored", token=token_for(now)
                    )
        except IntegrityError:  # created concurrently: the first one wins
            row = Workflow.objects.get(job_class=job_class, key=key)
            return cls._wake(row, on=enqueue)
        if enqueue:
            stored = "the workflow is stored, due now: `chrono_forge resume-overdue` starts it"
            return cls._enqueue_first(row, stored=stored, token=token_for(now))
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
    def _retryable_row(cls, key: Any, args: tuple, kwargs: dict[str, Any]) -> Workflow:
        validate_key(key, child=True)
        validate_kwargs(args, kwargs)
        if kwargs:
            raise TypeError(f"retry takes only the workflow key; got {sorted(kwargs)}")
        row = Workflow.objects.filter(job_class=cls.job_class(), key=key).first()
        if row is None:
            raise WorkflowNotRetryableError(f"{cls.job_class()}({key}) does not exist")
        if not row.retryable:
            raise WorkflowNotRetryableError(
                f"{row} is {row.state}; only failed or stalled workflows can be retried"
            )
        return row

    @classmethod
    def _execute(cls, key: str, **internal: Any) -> Workflow | None:
        from .executor import Pass

        return Pass(cls, key, **internal).execute()

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
            from .primitives.branch import ensure_merged

            ensure_merged(self)

    # -- primitives ----------------------------------------------------------------------------
    def durably_execute(
        self, method: Method, *, retry_policy: RetryPolicyLike = None, name: str | None = None
    ) -> Any:
        """Run ``method`` once, durably: retried per ``retry_policy`` (else the class default, else
        3 attempts); its JSON return value is stored and returned unchanged on replay."""
        return _durably_execute.durably_execute(self, method, retry_policy=retry_policy, name=name)

    # The primitives below live in their own modules (imported on use to keep start-up light).
    def wait(self, duration: timedelta | float, name: str) -> None:
        """Durable sleep: the deadline is fixed at first execution; the pass halts until it passes."""
        from .primitives.wait import wait

        return wait(self, duration, name)

    def wait_until(
        self,
        condition: Method,
        *,
        timeout: timedelta | float = timedelta(hours=1),
        check_interval: timedelta | float = timedelta(minutes=15),
        retry_policy: RetryPolicyLike = None,
        name: str | None = None,
    ) -> Any:
        """Poll ``condition`` every ``check_interval`` (by continuation) until true or ``timeout``."""
        from .primitives.wait_until import wait_until

        return wait_until(
            self,
            condition,
            timeout=timeout,
            check_interval=check_interval,
            retry_policy=retry_policy,
            name=name,
        )

    def continue_if(self, condition: Method, *, name: str | None = None) -> bool:
        """Event gate: park with nothing scheduled until ``condition`` is true on a later pass."""
        from .primitives.continue_if import continue_if

        return continue_if(self, condition, name=name)

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
        """Run ``method`` every ``every`` until ``till`` is true."""
        from .primitives.durably_repeat import durably_repeat

        return durably_repeat(
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
        """Fan out: ``dispatch`` spawns child workflows; the branch seals when it returns."""
        from .primitives.branch import branch

        return branch(self, name, dispatch, automerge=automerge)

    def spawn(self, name: str, workflow_class: type[DurableWorkflow], /, **kwargs: Any) -> None:
        """Inside a branch's dispatch: start one child workflow (keyed ``<key>$<branch>$<name>``)."""
        from .primitives.branch import spawn

        return spawn(self, name, workflow_class, **kwargs)

    def spawn_each(
        self, name: str, source: Any, build: Callable[[Any], Any], *, of: int = 1000
    ) -> None:
        """Inside a branch's dispatch: one child per item of ``source`` (streamed, resumable)."""
        from .primitives.branch import spawn_each

        return spawn_each(self, name, source, build, of=of)

    def merge_branches(
        self,
        *names: str,
        min_interval: timedelta | float = timedelta(seconds=5),
        max_interval: timedelta | float = timedelta(minutes=5),
    ) -> None:
        """Wait until every child of the named branches completed."""
        from .primitives.merge import merge_branches

        return merge_branches(self, *names, min_interval=min_interval, max_interval=max_interval)

    merge_branch = merge_branches
