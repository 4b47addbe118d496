"""The django-q2 dispatcher.

* Due now: ``async_task``.
* Due later with the ORM broker (the default): an ``OrmQ`` row whose ``lock`` ("not before") is the
  due time, written by a tiny broker subclass, so the pass starts within the broker's poll interval
  (~0.2 s).
* Due later with any other broker (Redis, SQS, ...): one django-q2 ``Schedule`` (ONCE) per workflow;
  the scheduler runs every ~30 s, so expect up to ~30 s of lateness.

With the ORM broker on chrono_forge's own database the enqueue is part of the caller's transaction
(a rollback drops it); otherwise it is deferred to ``transaction.on_commit``. Every task is sent
with ``ack_failure=True``: chrono_forge retries durably itself, so django-q2 must not redeliver a
failing task. A pass is sent with ``save=False`` (see :attr:`DjangoQDispatcher.save_results`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils.module_loading import import_string
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule
from django_q.tasks import async_task

from .. import clock, conf
from . import TASK, Run, in_user_transaction, run_arguments


class DelayedORM(ORM):
    """The ORM broker, writing the row invisible until ``run_at``."""

    def __init__(self, run_at: datetime, list_key: str | None = None):
        self.run_at = run_at
        super().__init__(list_key=list_key)

    def enqueue(self, task):
        return self.get_connection().create(key=self.list_key, payload=task, lock=self.run_at).pk


class CollectingORM(ORM):
    """The ORM broker, collecting signed packages for one bulk INSERT instead of writing each."""

    def __init__(self, list_key: str | None = None):
        self.rows: list[OrmQ] = []
        super().__init__(list_key=list_key)

    def enqueue(self, task):
        self.rows.append(OrmQ(key=self.list_key, payload=task, lock=clock.now()))
        return None

    def flush(self, batch_size: int = 500) -> None:
        OrmQ.objects.using(Conf.ORM).bulk_create(self.rows, batch_size=batch_size)
        self.rows = []


def uses_orm_broker() -> bool:
    """Whether django-q2 is configured with its ORM broker, decided from its settings the way
    ``get_broker`` does, without building a broker: building one outside ``atomic()`` closes the
    caller's "old" database connections, on every enqueue."""
    if Conf.BROKER_CLASS:
        return issubclass(import_string(Conf.BROKER_CLASS), ORM)
    return not Conf.IRON_MQ and not isinstance(Conf.SQS, dict) and bool(Conf.ORM)


def _task_name(job_class: str, key: str) -> str:
    return f"chrono_forge {job_class.rsplit('.', 1)[-1]}({key})"[:100]


def _schedule_name(job_class: str, key: str) -> str:
    digest = hashlib.sha1(f"{job_class}\0{key}".encode()).hexdigest()[:32]
    return f"chrono_forge:{digest}"


class DjangoQDispatcher:
    #: Whether django-q2 keeps a result row (``Success``) for every successful pass. chrono_forge
    #: records each step, result and error in its own tables, so passes are sent with
    #: ``save=False``: the cluster's monitor then skips the Task row, and with ``save_limit > 0``
    #: the locking and pruning of the Success rows, for every pass. A failed pass is still saved
    #: (django-q2's Failure list). A subclass named in ``CHRONO_FORGE["DISPATCHER"]`` may set it.
    save_results = False

    def cluster(self) -> str | None:
        return conf.get("CLUSTER")

    def q_options(self, job_class: str, key: str) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ack_failure": True,
            "save": self.save_results,
            "task_name": _task_name(job_class, key),
        }
        if self.cluster():
            options["cluster"] = self.cluster()
        if conf.get("TASK_TIMEOUT"):
            options["timeout"] = conf.get("TASK_TIMEOUT")
        return options

    def uses_orm_broker(self) -> bool:
        return uses_orm_broker()

    def transactional(self) -> bool:
        """True when the queue rows live in chrono_forge's own database (one transaction: both)."""
        return self.uses_orm_broker() and Conf.ORM == conf.database()

    def _on_commit(self, push) -> None:
        if self.transactional() or not in_user_transaction():
            # Inside atomic() the ORM broker does not close "old" connections.
            with transaction.atomic(using=Conf.ORM) if self.uses_orm_broker() else nullcontext():
                push()
        else:
            transaction.on_commit(push, using=conf.database())

    # Dispatcher interface -----------------------------------------------------------------------
    def enqueue(
        self, job_class: str, key: str, *, run_at: datetime | None = None, **internal: Any
    ) -> None:
        self._on_commit(lambda: self._push(job_class, key, run_at, internal))

    def enqueue_many(self, runs: Iterable[Run], **internal: Any) -> None:
        runs = list(runs)
        if runs:
            self._on_commit(lambda: self._push_many(runs, internal))

    def enqueue_call(
        self,
        func: str,
        *args: Any,
        run_at: datetime | None = None,
        cluster: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._on_commit(lambda: self._push_call(func, args, kwargs, run_at, cluster))

    # -------------------------------------------------------------------------------------------
    def _push(
        self, job_class: str, key: str, run_at: datetime | None, internal: dict[str, Any]
    ) -> None:
        self._send(
            TASK,
            (job_class, key),
            internal,
            run_at,
            self.cluster(),
            self.q_options(job_class, key),
            _schedule_name(job_class, key),
        )

    def _push_call(
        self,
        func: str,
        args: tuple,
        kwargs: dict[str, Any],
        run_at: datetime | None,
        cluster: str | None,
    ) -> None:
        options: dict[str, Any] = {
            "ack_failure": True,
            "task_name": f"chrono_forge {func.rsplit('.', 1)[-1]}",
        }
        if cluster:
            options["cluster"] = cluster
        self._send(func, args, kwargs, run_at, cluster, options, _schedule_name(func, repr(args)))

    def _send(
        self,
        func: str,
        args: tuple,
        kwargs: dict[str, Any],
        run_at: datetime | None,
        cluster: str | None,
        options: dict[str, Any],
        schedule_name: str,
    ) -> None:
        if run_at is None or run_at <= clock.now():
            async_task(func, *args, q_options=options, **kwargs)
        elif uses_orm_broker():
            options["broker"] = DelayedORM(run_at, list_key=cluster)
            async_task(func, *args, q_options=options, **kwargs)
        else:
            # Other brokers have no delayed delivery: one ONCE schedule per target (~30 s late).
            Schedule.objects.update_or_create(
                name=schedule_name,
                defaults={
                    "func": func,
                    "args": repr(tuple(args)),
                    "kwargs": repr(kwargs),
                    "schedule_type": Schedule.ONCE,
                    "repeats": -1,
                    "next_run": run_at,
                    "cluster": cluster,
                },
            )

    def _push_many(self, runs: list[Run], shared: dict[str, Any]) -> None:
        if not self.uses_orm_broker():
            for run in runs:
                job_class, key, internal = run_arguments(run, shared)
                async_task(
                    TASK, job_class, key, q_options=self.q_options(job_class, key), **internal
                )
            return
        broker = CollectingORM(list_key=self.cluster())
        for run in runs:
            job_class, key, internal = run_arguments(run, shared)
            options = {**self.q_options(job_class, key), "broker": broker}
            async_task(TASK, job_class, key, q_options=options, **internal)
        broker.flush()
