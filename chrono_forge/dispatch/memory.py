"""An in-memory dispatcher for tests: continuations wait in a list until :mod:`chrono_forge.testing`
runs them. An enqueue made inside an application ``atomic()`` block only becomes visible if that block
commits, exactly like the real ORM broker's queue row."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, transaction

from .. import clock, conf
from . import in_user_transaction


class _CommitMarker:
    """Registered with ``on_commit``; Django drops it if the enclosing block rolls back."""

    fired = False

    def __call__(self) -> None:
        self.fired = True


@dataclass
class PendingRun:
    """A continuation waiting in the in-memory queue."""

    job_class: str
    key: str
    run_at: datetime
    internal: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    marker: _CommitMarker | None = field(default=None, repr=False)

    def __iter__(self):  # unpacks as (job_class, key, run_at)
        return iter((self.job_class, self.key, self.run_at))


class InMemoryDispatcher:
    def __init__(self) -> None:
        self._runs: list[PendingRun] = []
        self._seq = itertools.count()

    def enqueue(self, job_class: str, key: str, *, run_at: datetime | None = None, **internal: Any) -> None:
        run = PendingRun(job_class, key, run_at or clock.now(), dict(internal), next(self._seq))
        if in_user_transaction():
            run.marker = _CommitMarker()
            transaction.on_commit(run.marker, using=conf.database())
        self._runs.append(run)

    def enqueue_many(self, runs: Iterable[tuple[str, str]]) -> None:
        for job_class, key in runs:
            self.enqueue(job_class, key)

    # -------------------------------------------------------------------------------------------
    def _visible(self, run: PendingRun) -> bool | None:
        """True: deliverable; False: still inside an open transaction; None: rolled back."""
        marker = run.marker
        if marker is None or marker.fired:
            return True
        connection = connections[conf.database()]
        if not any(func is marker for _, func, _ in connection.run_on_commit):
            return None
        return not in_user_transaction()

    def pending(self) -> list[PendingRun]:
        """Deliverable runs, ordered by due time (then enqueue order); rolled-back ones are forgotten."""
        kept = []
        for run in self._runs:
            visible = self._visible(run)
            if visible is not None:
                kept.append((run, visible))
        self._runs = [run for run, _ in kept]
        return sorted((run for run, visible in kept if visible), key=lambda r: (r.run_at, r.seq))

    def pop_due(self, now: datetime) -> PendingRun | None:
        for run in self.pending():
            if run.run_at <= now:
                self._runs.remove(run)
                return run
            break
        return None

    def clear(self) -> None:
        self._runs = []
