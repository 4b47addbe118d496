"""The Django Tasks dispatcher: passes as ``django.tasks`` tasks, on any backend that can defer.

Select it with ``CHRONO_FORGE["DISPATCHER"] =
"chrono_forge.dispatch.django_tasks.DjangoTasksDispatcher"`` (and ``"TASKS_BACKEND"``, the ``TASKS``
alias, default ``"default"``). Django 6 ships ``django.tasks``; on Django 5.2 the ``django-tasks``
backport provides the same API (``pip install 'chrono_forge[tasks]'`` installs it together with
``django-tasks-db``'s database backend and its ``db_worker``).

* Due now: ``run_pass.using(backend=..., queue_name=...).enqueue(job_class, key, **internal)``.
* Due later: the same with ``run_after`` (the backend must ``supports_defer``; system check
  ``chrono_forge.E040`` refuses one that cannot).
* chrono_forge's own background tasks (merge pollers, bulk admin actions, maintenance) go through
  :data:`call`, which imports the dotted function in the worker and calls it.
* ``CHRONO_FORGE["CLUSTER"]``, ``BRANCH_MERGE_CLUSTER`` and ``MAINTENANCE_CLUSTER`` name the
  backend's *queues* here (``None``: the default queue); a worker must process them.

Transactions: with django-tasks-db's ``DatabaseBackend`` writing to chrono_forge's own database, the
enqueue is an INSERT inside the caller's transaction (a rollback drops it, a commit publishes the
workflow row and its task together). With any other backend, inside an application ``atomic()``
block the enqueue waits for ``transaction.on_commit``: a crash between the commit and the enqueue
loses that task, and ``resume-overdue`` brings the workflow back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.utils.module_loading import import_string

from .. import clock, conf
from ..tasks import run_workflow
from . import Run, in_user_transaction, run_arguments

try:  # Django >= 6.0
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, task, task_backends
except ImportError:  # Django 5.2: the django-tasks backport
    try:
        # The backport's API is Django 6's, under another module.
        from django_tasks import (  # type: ignore[assignment, no-redef]
            DEFAULT_TASK_QUEUE_NAME,
            task,
            task_backends,
        )
    except ImportError as exc:
        raise ImportError(
            "DjangoTasksDispatcher needs Django >= 6.0 (django.tasks) or the django-tasks "
            "backport: pip install 'chrono_forge[tasks]'"
        ) from exc


def backend_alias() -> str:
    """The ``TASKS`` alias chrono_forge enqueues on (``CHRONO_FORGE["TASKS_BACKEND"]``)."""
    return conf.get("TASKS_BACKEND")


@task(backend=backend_alias())
def run_pass(job_class: str, key: str, **internal: Any) -> None:
    """One pass of a workflow (Django Tasks calls it; it calls ``tasks.run_workflow``)."""
    run_workflow(job_class, key, **internal)


@task(backend=backend_alias())
def call(func: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Call chrono_forge's background function at dotted path ``func`` (a merge poll, a bulk admin
    action, a maintenance sweep). Its return value is not stored (it need not be JSON)."""
    import_string(func)(*args, **kwargs)


def _queue(cluster: str | None) -> str:
    return cluster or DEFAULT_TASK_QUEUE_NAME


class DjangoTasksDispatcher:
    """Sends passes and chrono_forge's background calls to Django's Tasks framework.

    Example settings::

        TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
        CHRONO_FORGE = {
            "DISPATCHER": "chrono_forge.dispatch.django_tasks.DjangoTasksDispatcher",
            "TASKS_BACKEND": "default",
        }

    and run ``python manage.py db_worker --queue-name '*'``.
    """

    def backend(self):
        return task_backends[backend_alias()]

    def transactional(self) -> bool:
        """True when the backend stores its tasks as rows of chrono_forge's own database, so the
        enqueue joins the caller's transaction (django-tasks-db's DatabaseBackend)."""
        backend = self.backend()
        if not type(backend).__module__.startswith("django_tasks_db"):
            return False
        from django_tasks_db.models import DBTaskResult  # optional: only with that backend

        return router.db_for_write(DBTaskResult) == conf.database()

    def _on_commit(self, push) -> None:
        if self.transactional():
            # One atomic block: a bulk enqueue is all or nothing, and inside the caller's
            # transaction it commits or rolls back with it.
            with transaction.atomic(using=conf.database()):
                push()
        elif in_user_transaction():
            transaction.on_commit(push, using=conf.database())
        else:
            push()

    def _task(self, base, run_at: datetime | None, queue: str):
        options: dict[str, Any] = {"backend": backend_alias(), "queue_name": queue}
        if run_at is not None and run_at > clock.now():
            if not self.backend().supports_defer:
                raise ImproperlyConfigured(
                    f"the Django Tasks backend {backend_alias()!r} cannot defer tasks "
                    "(supports_defer is False); chrono_forge needs run_after for its "
                    "continuations (system check chrono_forge.E040)"
                )
            options["run_after"] = run_at
        return base.using(**options)

    # Dispatcher interface -----------------------------------------------------------------------
    def enqueue(
        self, job_class: str, key: str, *, run_at: datetime | None = None, **internal: Any
    ) -> None:
        """One pass of ``(job_class, key)``, now or (``run_after``) at ``run_at``."""
        queue = _queue(conf.get("CLUSTER"))
        pass_task = self._task(run_pass, run_at, queue)
        self._on_commit(lambda: pass_task.enqueue(job_class, key, **internal))

    def enqueue_many(self, runs: Iterable[Run], **shared: Any) -> None:
        """One pass of each ``(job_class, key)``, now, in one transaction when transactional."""
        runs = list(runs)
        if not runs:
            return
        queue = _queue(conf.get("CLUSTER"))

        def push() -> None:
            pass_task = self._task(run_pass, None, queue)
            for run in runs:
                job_class, key, internal = run_arguments(run, shared)
                pass_task.enqueue(job_class, key, **internal)

        self._on_commit(push)

    def enqueue_call(
        self,
        func: str,
        *args: Any,
        run_at: datetime | None = None,
        cluster: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Call the function at dotted path ``func`` in a worker, on queue ``cluster``."""
        queue = _queue(cluster)
        call_task = self._task(call, run_at, queue)
        self._on_commit(lambda: call_task.enqueue(func, list(args), kwargs))


__all__ = ["DjangoTasksDispatcher", "backend_alias", "call", "run_pass"]
