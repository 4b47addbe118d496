"""cleanup at scale: batches that walk an index from where the last one stopped (never
re-reading the candidates before them), repetition pruning in one statement over every periodic
task (then a delete per batch of pruned rows), and no deferred foreign-key check per deleted step
log at COMMIT."""

from __future__ import annotations

import math

import pytest
from django.db import connection

from chrono_forge import cleanup
from chrono_forge.models import ExecutionLog, Workflow
from tests.core_sql import capture
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
    with capture() as captured:
        result = cleanup.run(older_than=30 * DAY, batch_size=2)
    assert result["workflows"] == 5
    pages = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith("SELECT") and '"chrono_forge_workflow"."completed_at" >=' in q["sql"]
    ]
    # The pages after batches 1 and 2; the second is short (one row), so it ends the walk.
    assert len(pages) == 2
    plan = explain(pages[-1])
    assert "chrono_forge_wf_state_done" in plan, plan
    if connection.vendor == "sqlite":
        assert "TEMP B-TREE" not in plan, plan  # read in index order, nothing sorted


def test_dry_run_statements_do_not_grow_with_the_number_of_workflows(chrono_forge_env):
    """batch_size 1: a dry run that walked the candidates in batches would count per batch. It
    counts set-based: one COUNT per table over the expired workflows, however many there are."""

    def dry_run_statements(label: str, n: int) -> tuple[int, dict]:
        for i in range(n):
            state = ("completed", "failed")[i % 2]
            make_workflow(chrono_forge_env, f"{label}{i}", state, terminal_days_ago=40, logs=2)
        with capture() as captured:
            result = cleanup.run(older_than=30 * DAY, batch_size=1, dry_run=True)
        return len(captured.captured_queries), result

    few, counted = dry_run_statements("a", 3)
    assert (counted["workflows"], counted["execution_logs"], counted["error_logs"]) == (3, 6, 3)
    many, counted = dry_run_statements("b", 30)
    assert (counted["workflows"], counted["execution_logs"], counted["error_logs"]) == (33, 66, 33)
    assert many == few == 4  # messages, error logs, execution logs, workflows


def test_a_real_batch_takes_the_same_statements_for_3_or_300_workflows(chrono_forge_env):
    """The ids of a batch go to the database as one parameter: a batch of 300 takes the
    statements a batch of 3 takes (the locking page, the branch-log lookup, four DELETEs; the
    test runs inside a transaction, so each batch's is a savepoint)."""

    def statements(label: str, n: int) -> list[str]:
        for i in range(n):
            make_workflow(chrono_forge_env, f"{label}{i}", "completed", terminal_days_ago=40)
        with capture() as captured:
            result = cleanup.run(older_than=30 * DAY, batch_size=1000)
        assert result["workflows"] == n
        return [q["sql"].split(" ", 1)[0] for q in captured.captured_queries]

    few = statements("a", 3)
    many = statements("b", 300)
    assert many == few
    # The batch's transaction, then one (empty) page each for the cancelled and failed walks.
    batch = ["SAVEPOINT", "SELECT", "SELECT", *["DELETE"] * 4, "RELEASE"]
    assert few == [*batch, *["SAVEPOINT", "SELECT", "RELEASE"] * 2], few


def test_a_batchs_deletes_and_unlink_are_served_by_indexes(chrono_forge_env):
    """Each DELETE and the children's UPDATE find their rows by an index, one probe per id (an
    UPDATE with a thousand placeholders was planned by SQLite as a scan of every workflow)."""
    parent = make_workflow(chrono_forge_env, "parent", "completed", terminal_days_ago=40, logs=3)
    branch_log = ExecutionLog.objects.create(
        workflow=parent, step_name="branch$fan", state="completed"
    )
    child = make_workflow(chrono_forge_env, "child", "completed", terminal_days_ago=1)
    Workflow.objects.filter(pk=child.pk).update(parent_execution_log=branch_log)
    for i in range(20):
        make_workflow(chrono_forge_env, f"old{i}", "completed", terminal_days_ago=40, logs=3)
    with capture() as captured:
        assert cleanup.run(older_than=30 * DAY)["workflows"] == 21
    writes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith(("DELETE", "UP"))]
    assert len(writes) == 5, writes  # the children's link, then one DELETE per table
    for sql in writes:
        plan = explain(sql)
        if connection.vendor == "sqlite":
            assert "SCAN chrono_forge" not in plan, (sql, plan)
        else:
            assert "Seq Scan" not in plan, (sql, plan)
    assert Workflow.objects.get(pk=child.pk).parent_execution_log_id is None


def test_pruning_takes_the_same_statements_for_3_or_30_periodic_tasks(chrono_forge_env):
    def prune_queries(tasks: int) -> tuple[int, int]:
        for i in range(tasks):
            wf, _ = repeat_setup(chrono_forge_env, name=f"t{tasks}x{i}", frontier_days_ago=1)
            for day in (400, 300, 200):
                repetition(wf, f"t{tasks}x{i}", chrono_forge_env.now - day * DAY)
        with capture() as captured:
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


def periodic_tasks(env, tasks: int, prunable: int, label: str) -> None:
    """``tasks`` periodic tasks, each with two ticks behind its frontier; only the first
    ``prunable`` of them have their frontier far enough back for the 30-day window."""
    for i in range(tasks):
        name = f"{label}{tasks}x{i}"
        days = 100 if i < prunable else 1
        wf, _ = repeat_setup(env, name=name, frontier_days_ago=days)
        for behind in (2, 3):
            repetition(wf, name, env.now - (days + behind) * DAY)
        repetition(wf, name, env.now - (days + 5) * DAY, "pending")


def pruning_statements(**options) -> tuple[int, int]:
    """Statements of a run with pruning minus those of the same run without (the workflow
    stage's share), and the repetition logs it counted."""
    run = dict(older_than=10_000 * DAY, **options)
    with capture() as without:
        cleanup.run(**run)
    with capture() as captured:
        result = cleanup.run(**run, prune_repetitions_older_than=30 * DAY)
    extra = len(captured.captured_queries) - len(without.captured_queries)
    return extra, result["repetition_logs"]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_pruning_statements_do_not_grow_with_the_number_of_periodic_tasks(
    chrono_forge_env, dry_run
):
    """batch_size 1: a walk over the coordination logs would take statements per task. The
    candidates come from one statement over all tasks; only the deletes are batched (two
    prunable rows here: two batches of one on SQLite, one of ten on PostgreSQL, however many
    tasks hold nothing to prune)."""
    periodic_tasks(chrono_forge_env, 3, prunable=1, label="a")
    few, pruned = pruning_statements(batch_size=1, dry_run=dry_run)
    assert pruned == 2
    ExecutionLog.objects.filter(step_name__prefix="durably_repeat$a").delete()
    periodic_tasks(chrono_forge_env, 40, prunable=1, label="b")
    many, pruned = pruning_statements(batch_size=1, dry_run=dry_run)
    assert pruned == 2
    assert many == few
    # The SELECT; per batch (real run) the transaction's savepoint and release, UPDATE, DELETE.
    batches = math.ceil(2 / cleanup.repetition_batch(1, connection))
    assert few == (1 if dry_run else 1 + batches * 4), few
    left = ExecutionLog.objects.filter(step_name__regex=r"^durably_repeat\$[^$]*\$")
    assert left.count() == (120 if dry_run else 118)


def test_pruning_deletes_in_batches_of_repetition_batch_ids(chrono_forge_env):
    """Each pruning transaction deletes up to repetition_batch(batch_size) rows: batch_size on
    SQLite, ten times that on PostgreSQL (where every commit waits for an fsync)."""
    wf, _ = repeat_setup(chrono_forge_env, name="many", frontier_days_ago=1)
    for day in range(25):
        repetition(wf, "many", chrono_forge_env.now - (40 + day) * DAY)
    per_batch = cleanup.repetition_batch(2, connection)
    assert per_batch == (20 if connection.vendor == "postgresql" else 2)
    with capture() as captured:
        result = cleanup.run(
            older_than=10_000 * DAY, prune_repetitions_older_than=30 * DAY, batch_size=2
        )
    assert result["repetition_logs"] == 25
    deletes = [q for q in captured.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == math.ceil(25 / per_batch)
    assert not ExecutionLog.objects.filter(step_name__startswith="durably_repeat$many$").exists()


def test_pruning_dry_run_counts_in_one_statement(chrono_forge_env):
    periodic_tasks(chrono_forge_env, 25, prunable=25, label="d")
    extra, pruned = pruning_statements(dry_run=True)
    assert pruned == 50  # the pending ones are never pruned
    assert extra == 1


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
    # Its index: chrono_forge_wf_parent_state leads with the column (no index of its own).
    assert any(
        c["columns"][:1] == ["parent_execution_log_id"] and c["index"] for c in constraints.values()
    )
