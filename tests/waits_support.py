"""Helpers shared by the tests/test_waits_*.py modules."""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connections
from django.test.utils import CaptureQueriesContext

from chrono_forge import conf
from chrono_forge.models import ExecutionLog, Workflow

LOG_TABLE = ExecutionLog._meta.db_table
WORKFLOW_TABLE = Workflow._meta.db_table


@contextmanager
def capture():
    with CaptureQueriesContext(connections[conf.database()]) as queries:
        yield queries


def statements(queries, verb: str, table: str = LOG_TABLE) -> list[str]:
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


def attempt_updates(queries) -> list[str]:
    """UPDATEs on execution logs writing ``attempts`` (a first attempt in the INSERT has none)."""
    return [sql for sql in statements(queries, "UPDATE") if '"attempts"' in sql.split(" WHERE ")[0]]


def step_names(workflow: Workflow) -> list[str]:
    return list(workflow.execution_logs.order_by("id").values_list("step_name", flat=True))


def log(workflow: Workflow, step_name: str) -> ExecutionLog:
    return ExecutionLog.objects.get(workflow=workflow, step_name=step_name)


def refresh(workflow: Workflow) -> Workflow:
    workflow.refresh_from_db()
    return workflow
