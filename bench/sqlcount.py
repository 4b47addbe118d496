"""Statements and commits of every process of a benchmark, qcluster workers included.

Counted like the query-budget tests count them (tests/core_sql.py): data statements (SELECT,
INSERT, UPDATE, DELETE) through a ``connection.execute_wrapper``, and commits = writes run outside
any ``atomic()`` block (autocommit: one commit each) + calls of ``connection.commit()`` (one per
outermost ``atomic()`` block).

Each process keeps its totals in ``<directory>/<pid>.json``, rewritten after every statement (so a
worker that is never shut down cleanly still leaves its counts); :func:`totals` sums the files.
That costs time, so only a counting run installs it, never a timed one: bench/settings.py calls
:func:`install` when ``BENCH_SQL_COUNTS`` names a directory, in every process of the cluster.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

DATA = ("SELECT", "INSERT", "UPDATE", "DELETE")

_directory: Path | None = None
_counts: dict[str, int] = {}
_pid = 0
_paused = False


def install(directory: str) -> None:
    """Count on every database connection this process opens from now on (and on those it has)."""
    global _directory
    from django.db.backends.signals import connection_created

    _directory = Path(directory)
    _directory.mkdir(parents=True, exist_ok=True)
    connection_created.connect(_on_connection_created, weak=False)
    if "django.db" in sys.modules:
        from django.db import connections

        for connection in connections.all(initialized_only=True):
            attach(connection)


def _on_connection_created(sender, connection, **kwargs) -> None:
    attach(connection)


def attach(connection) -> None:
    if getattr(connection, "_bench_sqlcount", False):
        return
    connection._bench_sqlcount = True
    connection.execute_wrappers.append(_record(connection))
    original_commit = connection.commit

    def commit():
        _count("commits")
        return original_commit()

    connection.commit = commit


def _record(connection):
    from tests.core_sql import kind  # imported late: settings import this module

    def record(execute, sql, params, many, context):
        statement = kind(sql)
        if statement in DATA:
            _count("statements")
            _count(statement)
            if statement != "SELECT" and not connection.in_atomic_block:
                _count("commits")
        return execute(sql, params, many, context)

    return record


@contextmanager
def paused():
    """Not counting this process's statements (a bench's own polling) inside the block."""
    global _paused
    _paused = True
    try:
        yield
    finally:
        _paused = False


def _count(name: str) -> None:
    global _pid
    if _paused:
        return
    if _pid != os.getpid():  # a forked child starts from zero
        _pid = os.getpid()
        _counts.clear()
    _counts[name] = _counts.get(name, 0) + 1
    if name == "statements" or name == "commits":
        scratch = _directory / f"{_pid}.tmp"
        scratch.write_text(json.dumps(_counts))
        scratch.replace(_directory / f"{_pid}.json")  # a reader never sees a half-written file


def totals(directory: str) -> dict[str, int]:
    """The counts of every process that wrote into ``directory``, summed."""
    summed: dict[str, int] = {}
    for path in Path(directory).glob("*.json"):
        counts = json.loads(path.read_text())
        for name, value in counts.items():
            summed[name] = summed.get(name, 0) + value
    return summed
