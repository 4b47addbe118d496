"""SQL accounting for the query-budget tests: statements by table and kind, and commits.

The one place tests capture SQL: :func:`capture` (Django's ``CaptureQueriesContext`` on
chrono_forge's database, with :func:`statements` and :func:`data_statements` over what it caught)
for the statements of a block, and :class:`SqlLog` when the commits count too.

Counting commits: ``CaptureQueriesContext`` does not show COMMITs, and in autocommit mode Django
never calls ``commit()`` (the database commits each statement on its own). So :class:`SqlLog`
records, through ``connection.execute_wrapper``, every statement together with whether
``connection.in_atomic_block`` was set, and wraps ``connection.commit`` to count the commits Django
issues when an outermost ``atomic()`` block exits:

    commits = writes (INSERT/UPDATE/DELETE) run outside any atomic block (each commits on its own)
            + calls of connection.commit() (one per outermost atomic block)

A SELECT outside an atomic block commits nothing, so it is not counted.

Only meaningful with real commits, i.e. in ``transactional_db`` tests (in a ``django_db`` test every
statement runs inside the test case's own transaction).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connections
from django.test.utils import CaptureQueriesContext

from chrono_forge import conf

WORKFLOW = "chrono_forge_workflow"
EXECUTION_LOG = "chrono_forge_executionlog"
ERROR_LOG = "chrono_forge_errorlog"

_KIND = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)", re.I
)


def kind(sql: str) -> str:
    match = _KIND.match(sql)
    return match.group(1).upper() if match else sql.split(None, 1)[0].upper()


def table(sql: str) -> str | None:
    """The main table of a statement (the one after FROM / INTO / UPDATE)."""
    pattern = {
        "SELECT": r'\bFROM\s+"?(\w+)"?',
        "INSERT": r'\bINTO\s+"?(\w+)"?',
        "UPDATE": r'^\s*UPDATE\s+"?(\w+)"?',
        "DELETE": r'\bFROM\s+"?(\w+)"?',
    }.get(kind(sql))
    if pattern is None:
        return None
    match = re.search(pattern, sql, re.I)
    return match.group(1) if match else None


@dataclass
class Statement:
    sql: str
    in_atomic: bool

    @property
    def kind(self) -> str:
        return kind(self.sql)

    @property
    def table(self) -> str | None:
        return table(self.sql)


@dataclass
class SqlLog:
    """``with SqlLog() as log:`` records statements and commits on chrono_forge's database."""

    statements: list[Statement] = field(default_factory=list)
    explicit_commits: int = 0
    #: for every connection.commit() call: how many data statements had run by then (an index into
    #: ``data_statements``: the commit follows ``data_statements[point - 1]``)
    commit_points: list[int] = field(default_factory=list)

    def __enter__(self) -> SqlLog:
        self.connection = connections[conf.database()]
        self.connection.ensure_connection()
        self._wrapper = self.connection.execute_wrapper(self._record)
        self._wrapper.__enter__()
        self._original_commit = self.connection.commit
        log = self

        def commit():
            log.explicit_commits += 1
            log.commit_points.append(len(log.data_statements))
            return log._original_commit()

        self.connection.commit = commit
        return self

    def __exit__(self, *exc) -> None:
        self.connection.commit = self._original_commit
        self._wrapper.__exit__(*exc)

    def _record(self, execute, sql, params, many, context):
        self.statements.append(Statement(sql, self.connection.in_atomic_block))
        return execute(sql, params, many, context)

    # -- queries over the record -----------------------------------------------------------
    def of(self, kind: str | None = None, table: str | None = None) -> list[Statement]:
        return [
            s
            for s in self.statements
            if (kind is None or s.kind == kind) and (table is None or s.table == table)
        ]

    def count(self, kind: str | None = None, table: str | None = None) -> int:
        return len(self.of(kind, table))

    @property
    def data_statements(self) -> list[Statement]:
        """SELECT/INSERT/UPDATE/DELETE (savepoint control excluded)."""
        return [s for s in self.statements if s.kind in ("SELECT", "INSERT", "UPDATE", "DELETE")]

    @property
    def commits(self) -> int:
        autocommitted = sum(
            1 for s in self.data_statements if not s.in_atomic and s.kind != "SELECT"
        )
        return autocommitted + self.explicit_commits

    def summary(self) -> str:
        by_kind: dict[str, int] = {}
        for s in self.data_statements:
            by_kind[s.kind] = by_kind.get(s.kind, 0) + 1
        parts = " ".join(f"{n}{k[0]}" for k, n in sorted(by_kind.items()))
        return f"{len(self.data_statements)} statements ({parts}), {self.commits} commits"

    def dump(self) -> str:
        return "\n".join(f"{'[atomic] ' if s.in_atomic else ''}{s.sql}" for s in self.statements)


# -- Django's capture of one block's statements -------------------------------------------------
@contextmanager
def capture() -> Iterator[CaptureQueriesContext]:
    """``with capture() as queries:`` records the statements of the block on chrono_forge's
    database (``queries.captured_queries``; ``len(queries)``)."""
    with CaptureQueriesContext(connections[conf.database()]) as queries:
        yield queries


def statements(queries, verb: str, table: str = EXECUTION_LOG) -> list[str]:
    """The SQL of ``verb`` (SELECT/INSERT/UPDATE/DELETE) statements on ``table``."""
    found = []
    for query in queries.captured_queries:
        sql = query["sql"]
        head = sql.lstrip().upper()
        if head.startswith(verb) and f'"{table}"' in sql.split(" WHERE ")[0]:
            found.append(sql)
    return found


TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK", "BEGIN", "COMMIT")


def data_statements(queries) -> list[str]:
    """Every statement except transaction control (savepoints differ between test wrappers)."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].lstrip().upper().startswith(TRANSACTION_CONTROL)
    ]
