"""Dispatch: how a continuation (one more pass of a workflow) reaches a worker.

A dispatcher is one small interface. The default,
:class:`~chrono_forge.dispatch.django_q.DjangoQDispatcher`, sends passes to django-q2;
:mod:`chrono_forge.testing` swaps in an in-memory one. Everything in chrono_forge calls
:func:`enqueue` / :func:`enqueue_many` below, never a dispatcher directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from django.db import connections, transaction
from django.utils.module_loading import import_string

from .. import conf
from ..telemetry import carrier

#: The django-q2 task every continuation calls.
TASK = "chrono_forge.tasks.run_workflow"
#: The task a merge poller's poll calls.
POLL_TASK = "chrono_forge.tasks.poll_merge"


def token_for(run_at: datetime) -> str:
    """The token a delivery due at ``run_at`` carries: the pass runs only while the row's due
    time is still that one (a superseded continuation exits)."""
    return run_at.isoformat()


#: One run of a bulk enqueue: ``(job_class, key)``, or ``(job_class, key, internal)`` with
#: arguments of that run alone (a redelivery's token), added to the ones every run carries.
Run = tuple[str, str] | tuple[str, str, dict[str, Any]]


def run_arguments(run: Run, shared: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(job_class, key, internal)`` of one bulk-enqueue ``run``: ``shared`` plus its own."""
    if len(run) == 2:
        return run[0], run[1], shared
    own: dict[str, Any] = run[2]
    return run[0], run[1], {**shared, **own}


class Dispatcher(Protocol):
    def enqueue(
        self, job_class: str, key: str, *, run_at: datetime | None = None, **internal: Any
    ) -> None:
        """Run one pass of ``(job_class, key)`` now, or not before ``run_at``.

        ``internal`` carries chrono_forge's own task arguments (attempt, retry_counts,
        retry_workflow, token, ...); user kwargs never travel in a payload.
        """

    def enqueue_many(self, runs: Iterable[Run], **internal: Any) -> None:
        """Run one pass of each ``(job_class, key)`` now, in bulk, each carrying the same
        ``internal`` arguments plus its own (a run given as ``(job_class, key, internal)``; see
        :func:`run_arguments`)."""

    def enqueue_call(
        self,
        func: str,
        *args: Any,
        run_at: datetime | None = None,
        cluster: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Call the function at dotted path ``func`` in a worker (chrono_forge's own background
        tasks: merge pollers, bulk operator actions, maintenance). Arguments must be JSON-like
        literals."""


_override: Dispatcher | None = None


@lru_cache(maxsize=8)
def _load(path: str) -> Dispatcher:
    return import_string(path)()


def get_dispatcher() -> Dispatcher:
    if _override is not None:
        return _override
    return _load(conf.get("DISPATCHER"))


def set_dispatcher(dispatcher: Dispatcher | None) -> Dispatcher | None:
    """Install ``dispatcher`` (None restores the configured one); returns the previous override."""
    global _override
    previous, _override = _override, dispatcher
    return previous


#: Keyword names ``django_q.tasks.async_task`` takes for itself: an internal argument with one of
#: these names would silently become a task option instead of reaching ``run_workflow``.
Q_OPTION_NAMES = frozenset(
    {
        "hook",
        "group",
        "save",
        "sync",
        "cached",
        "ack_failure",
        "iter_count",
        "iter_cached",
        "chain",
        "broker",
        "cluster",
        "timeout",
        "task_name",
        "q_options",
    }
)


def enqueue(job_class: str, key: str, *, run_at: datetime | None = None, **internal: Any) -> None:
    clash = sorted(Q_OPTION_NAMES.intersection(internal))
    if clash:
        raise ValueError(
            f"continuation argument(s) {clash} clash with django-q2 task options; rename them"
        )
    if "trace_context" not in internal:
        context = carrier()  # the enqueuer's trace, when there is one (never a pass's own)
        if context:
            internal["trace_context"] = context
    get_dispatcher().enqueue(job_class, key, run_at=run_at, **internal)


def enqueue_many(runs: Iterable[Run], **internal: Any) -> None:
    runs = list(runs)
    names = set(internal).union(*(run[2] for run in runs if len(run) == 3))
    clash = sorted(Q_OPTION_NAMES.intersection(names))
    if clash:
        raise ValueError(
            f"continuation argument(s) {clash} clash with django-q2 task options; rename them"
        )
    get_dispatcher().enqueue_many(runs, **internal)


def enqueue_call(
    func: str, *args: Any, run_at: datetime | None = None, cluster: str | None = None, **kwargs: Any
) -> None:
    get_dispatcher().enqueue_call(func, *args, run_at=run_at, cluster=cluster, **kwargs)


def transactional() -> bool:
    """Whether an enqueue commits with chrono_forge's own writes (a queue in the same database): a
    dispatcher says so with a ``transactional()`` method; one without it is assumed not to."""
    check = getattr(get_dispatcher(), "transactional", None)
    return bool(check and check())


def with_enqueue():
    """The block that writes a due time and enqueues its delivery: one transaction when the queue
    is in chrono_forge's database (both or neither), else none, so the due time commits before the
    enqueue (a refused or lost enqueue leaves it for the overdue sweep)."""
    return transaction.atomic(using=conf.database()) if transactional() else nullcontext()


def in_user_transaction(using: str | None = None) -> bool:
    """True inside an ``atomic()`` block opened by application code (a test case's own wrapping
    transaction does not count), i.e. when an enqueue has to wait for the commit."""
    connection = connections[using or conf.database()]
    # ``_from_testcase`` is Django's mark on the blocks a TestCase opens (absent from the stubs).
    blocks = connection.atomic_blocks
    return any(not block._from_testcase for block in blocks)  # type: ignore[attr-defined]
