"""Workflow classes run by the engine end-to-end tests (Redis broker, two clusters, Django Tasks).

Every step body appends a row to a side table (``engine_runs``, created by the ``runs_table``
fixture in conftest.py) from whichever worker process runs it, so a test can count how often each
step ran and which "machine" (``CHRONO_FORGE_TEST_MACHINE`` in the worker's environment) ran it.
"""

from __future__ import annotations

import os
from datetime import timedelta

from django.db import connections

from chrono_forge import DurableWorkflow, conf

TABLE = "engine_runs"


def record(key: str, step: str) -> None:
    """One row per execution of a step body (committed at once: the body runs in autocommit)."""
    machine = os.environ.get("CHRONO_FORGE_TEST_MACHINE", "test")
    with connections[conf.database()].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (workflow_key, step, machine, pid) VALUES (%s, %s, %s, %s)",
            [key, step, machine, os.getpid()],
        )


def runs() -> list[tuple[str, str, str, int]]:
    """Every recorded execution: ``(workflow_key, step, machine, pid)``."""
    with connections[conf.database()].cursor() as cursor:
        cursor.execute(f"SELECT workflow_key, step, machine, pid FROM {TABLE} ORDER BY id")
        return [tuple(row) for row in cursor.fetchall()]


class Pipeline(DurableWorkflow):
    """Three steps, with a durable ``wait`` of ``pause`` seconds between the first two."""

    def perform(self, *, pause: float = 0.0):
        self.durably_execute(self.fetch)
        if pause:
            self.wait(timedelta(seconds=pause), "pause")
        self.durably_execute(self.transform)
        self.durably_execute(self.store)

    def fetch(self):
        record(self.key, "fetch")
        return 1

    def transform(self):
        record(self.key, "transform")
        return 2

    def store(self):
        record(self.key, "store")
        return 3


class Leaf(DurableWorkflow):
    """A fan-out child: one step."""

    def perform(self, *, item: int):
        self.durably_execute(self.work)

    def work(self):
        record(self.key, "work")
        return True


class FanOut(DurableWorkflow):
    """Spawns ``n`` Leaf children, waits for all of them (a fast-polling merge), then finishes."""

    def perform(self, *, n: int = 3):
        self.n = n
        self.branch("leaves", self.dispatch)
        self.merge_branches("leaves", min_interval=0.2, max_interval=1)
        self.durably_execute(self.finish)

    def dispatch(self):
        self.spawn_each("item", range(self.n), lambda item: (Leaf, {"item": item}))

    def finish(self):
        record(self.key, "finish")
        return self.n
