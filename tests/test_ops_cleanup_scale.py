"""cleanup at scale: batches that walk an index from where the last one stopped (never
re-reading the candidates before them), repetition pruning in a fixed number of statements per
batch of periodic tasks (not two per task), and no deferred foreign-key check per deleted step
log at COMMIT."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chrono_forge import cleanup
from chrono_forge.models import ExecutionLog, Workflow
from tests.test_ops_cleanup import DAY, make_workflow, repeat_setup, repetition

pytestmark = pytest.mark.django_db


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute("EXPLAIN " + sql)
            return "\n".join(row[0] for row in cursor)
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return "\n".join(row[-1] for row in cursor)


def test_each_batch_starts_where_the_last_stopped_along_the_index(chrono_forge_env):
    for i in range(5):
        make_workflow(chrono_forge_env, f"old{i}", "completed", terminal_days_ago=40 + i, logs=1)
    with CaptureQueriesContext(connection) as captured:
        result = cleanup.run(older_than=30 * DAY, batch_size=2, dry_run=True)
    assert result["workflows"] == 5
    pages = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith("SELECT") and '"chrono_forge_workflow"."completed_at" >=' in q["sql"]
    ]
    assert len(pages) == 3  # after batches 1 and 2, and the empty one that ends the walk
    plan = explain(pages[-1])
    assert "chrono_forge_wf_state_done" in plan, plan
    if connection.vendor == "sqlite":
        assert "TEMP B-TREE" not in plan, plan  # read in index order, nothing sorted


def test_pruning_takes_the_same_statements_for_3_or_30_periodic_tasks(chrono_forge_env):
    def prune_queries(tasks: int) -> tuple[int, int]:
        for i in range(tasks):
            wf, _ = repeat_setup(chrono_forge_env, name=f"t{tasks}x{i}", frontier_days_ago=1)
            for day in (400, 300, 200):
                repetition(wf, f"t{tasks}x{i}", chrono_forge_env.now - day * DAY)
        with CaptureQueriesContext(connection) as captured:
            result = cleanup.run(
                older_than=10_000 * DAY, prune_repetitions_older_than=30 * DAY, batch_size=1000
            )
        return len(captured.captured_queries), result["repetition_logs"]

    few, pruned = prune_queries(3)
    assert pruned == 9
    many, pruned = prune_queries(30)
    assert pruned == 90
    assert many == few
    assert not ExecutionLog.objects.filter(step_name__regex=r"^durably_repeat\$[^$]*\$").exists()


def test_pruning_dry_run_counts_in_one_select_per_batch(chrono_forge_env):
    for i in range(4):
        wf, _ = repeat_setup(chrono_forge_env, name=f"d{i}", frontier_days_ago=1)
        repetition(wf, f"d{i}", chrono_forge_env.now - 400 * DAY)
        repetition(wf, f"d{i}", chrono_forge_env.now - 400 * DAY + timedelta(seconds=5), "pending")
    with CaptureQueriesContext(connection) as captured:
        result = cleanup.run(
            older_than=10_000 * DAY, prune_repetitions_older_than=30 * DAY, dry_run=True
        )
    assert result["repetition_logs"] == 4  # the pending ones are never pruned
    repetition_selects = [
        q
        for q in captured.captured_queries
        if q["sql"].count('"chrono_forge_executionlog"."workflow_id" =') >= 4
    ]
    assert len(repetition_selects) == 1


def test_a_childs_link_to_its_branch_log_has_no_database_constraint():
    """PostgreSQL checked that deferred constraint at COMMIT once per deleted step log."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Workflow._meta.db_table)
    links = [
        name
        for name, c in constraints.items()
        if c["foreign_key"] and c["columns"] == ["parent_execution_log_id"]
    ]
    assert links == []
    assert any(
        c["columns"] == ["parent_execution_log_id"] and c["index"] for c in constraints.values()
    )
