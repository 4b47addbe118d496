"""What deadlines cost: nothing on a pass (the first pass sets ``deadline_at`` in the UPDATE that
takes the lock), a fixed number of statements per batch of the sweep whatever the number of runs
past their deadline, and the sweep's SELECT is served by the ``chrono_forge_wf_deadline`` index."""

from __future__ import annotations

import re

import pytest
from django.db import connections, transaction

from chrono_forge import cancellation, conf
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_deadline as wd
from tests.core_sql import ERROR_LOG, WORKFLOW, SqlLog

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 10


def first_pass(env, key: str, **options) -> SqlLog:
    wd.Parked.perform_later(key, options=options)
    with SqlLog() as sql:
        assert env.run_due() == 1
    assert Workflow.objects.get(key=key).parked_on == "continue_if$gate"
    return sql


def test_a_first_pass_with_a_deadline_costs_no_statement_more_than_one_without(chrono_forge_env):
    bounded = first_pass(chrono_forge_env, "bounded")
    unbounded = first_pass(chrono_forge_env, "unbounded", deadline=None)
    shape = {
        name: [(s.kind, s.table) for s in sql.data_statements]
        for name, sql in (("bounded", bounded), ("unbounded", unbounded))
    }
    assert shape["bounded"] == shape["unbounded"], bounded.dump()
    assert bounded.commits == unbounded.commits
    [lock, *_] = [s.sql for s in bounded.of("UPDATE", WORKFLOW)]
    assert "deadline_at" in lock and "started_at" in lock  # one UPDATE takes the lock and sets it
    assert Workflow.objects.get(key="bounded").deadline_at is not None
    assert Workflow.objects.get(key="unbounded").deadline_at is None


def sweep_cost(env, prefix: str, runs: int) -> SqlLog:
    for index in range(runs):
        wd.Parked.perform_later(f"{prefix}-{index}")
    env.run_due()
    env.advance(wd.HOUR)
    with SqlLog() as sql:
        assert Workflow.objects.cancel_past_deadline() == runs
    cancelled = Workflow.objects.filter(key__startswith=f"{prefix}-", state="cancelled")
    assert cancelled.count() == runs
    assert ErrorLog.objects.filter(workflow__key__startswith=f"{prefix}-").count() == runs
    return sql


def test_the_sweep_costs_a_fixed_number_of_statements_per_batch(chrono_forge_env, monkeypatch):
    monkeypatch.setattr(cancellation, "CANCEL_BATCH_SIZE", BATCH)
    costs = {n: sweep_cost(chrono_forge_env, f"s{n}", n) for n in (15, 35)}
    statements = {n: len(sql.data_statements) for n, sql in costs.items()}
    batches = {n: -(-n // BATCH) for n in costs}  # 2 and 4
    per_batch = (statements[35] - statements[15]) / (batches[35] - batches[15])
    print(f"\nsweep: {statements} statements; {per_batch:g} per batch of {BATCH} runs")
    # the ids SELECT; cancel_rows' ids SELECT, UPDATE and children SELECT; the SELECT of the rows
    # it cancelled and the bulk INSERT of their ErrorLog entries
    assert per_batch == 6
    assert statements[15] == 6 * batches[15]
    for n, sql in costs.items():
        assert sql.count("INSERT", ERROR_LOG) == batches[n]  # one bulk INSERT per batch
        assert sql.count("UPDATE", WORKFLOW) == batches[n]
        assert sql.explicit_commits == batches[n]  # one transaction per batch


def test_the_sweep_with_nothing_past_its_deadline_is_one_select(chrono_forge_env):
    wd.Parked.perform_later("early")
    chrono_forge_env.run_due()
    with SqlLog() as sql:
        assert Workflow.objects.cancel_past_deadline() == 0
    assert [(s.kind, s.table) for s in sql.data_statements] == [("SELECT", WORKFLOW)]


def plan(queryset) -> str:
    """The query plan of ``queryset`` (PostgreSQL: with sequential scans discouraged, so the answer
    says whether the index *can* serve the query, not what a tiny table prefers)."""
    connection = connections[conf.database()]
    sql, params = queryset.query.sql_with_params()
    with transaction.atomic(using=conf.database()), connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # SET LOCAL holds inside a transaction only
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(
            str(row[-1] if connection.vendor == "sqlite" else row[0]) for row in cursor
        )


def test_the_sweeps_select_is_served_by_the_deadline_index(chrono_forge_env):
    wd.Parked.perform_later("indexed")
    chrono_forge_env.run_due()
    # Unfinished rows without a deadline, as most are, with fresh statistics: on a near-empty
    # table every (state, ...) index costs PostgreSQL the same and its pick follows whatever
    # statistics earlier tests left, so the test would not say whether the partial index serves.
    Workflow.objects.bulk_create(
        Workflow(job_class=wd.Parked.job_class(), key=f"no-deadline-{n}", state="idle")
        for n in range(2_000)
    )
    with connections[conf.database()].cursor() as cursor:
        cursor.execute(f"ANALYZE {Workflow._meta.db_table}")
    query = Workflow.objects.past_deadline().order_by("pk").values_list("pk", flat=True)[:1000]
    text = plan(query)
    assert re.search(r"\bchrono_forge_wf_deadline\b", text), text
