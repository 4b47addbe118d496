"""Helpers shared by the tests/test_waits_*.py modules (their SQL capture is tests.core_sql's)."""

from __future__ import annotations

from chrono_forge.models import ExecutionLog, Workflow
from tests.core_sql import statements

LOG_TABLE = ExecutionLog._meta.db_table
WORKFLOW_TABLE = Workflow._meta.db_table


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
