"""Branch replay cost and the bulk child INSERT, plus the per-batch statement budget: statement
counts that must not grow with the number of children."""

import pytest
from django.db import connection

from chrono_forge import tasks
from chrono_forge.dispatch import token_for
from chrono_forge.models import ExecutionLog, Workflow
from tests import core_sql
from tests import workflows_branches as wb
from tests.core_sql import SqlLog, capture

pytestmark = pytest.mark.django_db

WORKFLOWS = Workflow._meta.db_table


def statements(queries, verb, table=WORKFLOWS):
    """tests.core_sql.statements, on the workflow table unless told otherwise."""
    return core_sql.statements(queries, verb, table)


def fan_out(env, key, n, **kwargs):
    wb.FanOut.perform_later(key, source="list", n=n, **kwargs)
    env.run_all()
    assert Workflow.objects.get(key=key).state == "completed"


def replay(env, key, *, drop_merge=False):
    """Delete the completion marker (and the merge log), set the row idle and run one pass."""
    ExecutionLog.objects.filter(workflow__key=key, step_name="$workflow_completion$").delete()
    if drop_merge:
        ExecutionLog.objects.filter(workflow__key=key, step_name__startswith="merge$").delete()
    Workflow.objects.filter(key=key).update(state="idle", completed_at=None)
    children_before = list(
        Workflow.objects.filter(key__startswith=f"{key}$")
        .order_by("pk")
        .values_list("key", "state", "modified")
    )
    with capture() as queries:
        wb.FanOut._execute(key)
    assert Workflow.objects.get(key=key).state == "completed"
    assert (
        list(
            Workflow.objects.filter(key__startswith=f"{key}$")
            .order_by("pk")
            .values_list("key", "state", "modified")
        )
        == children_before
    )  # children untouched
    assert env.pending == []  # nothing enqueued: no child, no poller
    return queries


def test_replaying_a_completed_parent_inserts_and_enqueues_nothing(chrono_forge_env):
    fan_out(chrono_forge_env, "p", 5)
    queries = replay(chrono_forge_env, "p")
    assert statements(queries, "INSERT") == []
    assert wb.EVENTS["FanOut.perform"] == 3  # first pass, the poller's wake-up, the replay


def test_three_consecutive_replays_each_complete_with_the_same_children(chrono_forge_env):
    fan_out(chrono_forge_env, "p", 4)
    for _ in range(3):
        replay(chrono_forge_env, "p")
        assert (
            ExecutionLog.objects.get(workflow__key="p", step_name="durably_execute$finalize").result
            is True
        )
        keys = list(Workflow.objects.filter(key__startswith="p$").values_list("key", flat=True))
        assert len(keys) == len(set(keys)) == 4
    assert wb.EVENTS["FanOut.finalize"] == 1


def test_replay_statements_do_not_depend_on_the_number_of_children(chrono_forge_env):
    fan_out(chrono_forge_env, "small", 5)
    fan_out(chrono_forge_env, "large", 30)
    small, large = replay(chrono_forge_env, "small"), replay(chrono_forge_env, "large")
    for verb in ("SELECT", "UPDATE", "INSERT"):
        assert len(statements(small, verb)) == len(statements(large, verb)), verb
    assert statements(small, "INSERT") == []
    assert len(small.captured_queries) == len(large.captured_queries)


def test_re_probing_a_dropped_merge_costs_the_same_for_3_and_30_children(chrono_forge_env):
    fan_out(chrono_forge_env, "small", 3)
    fan_out(chrono_forge_env, "large", 30)
    small = replay(chrono_forge_env, "small", drop_merge=True)
    large = replay(chrono_forge_env, "large", drop_merge=True)
    assert len(statements(small, "SELECT")) == len(statements(large, "SELECT")) == 2  # lock + probe
    probe = [sql for sql in statements(large, "SELECT") if '"parent_execution_log_id" IN' in sql]
    assert len(probe) == 1 and "LIMIT 1" in probe[0]  # one EXISTS, no per-child scan
    assert (
        ExecutionLog.objects.get(workflow__key="large", step_name="merge$grp").state == "completed"
    )


# -- the per-batch budget --------------------------------------------------------------------------
def test_25_children_in_batches_of_10_cost_4_workflow_inserts(chrono_forge_env):
    with capture() as queries:
        fan_out(chrono_forge_env, "p", 25, of=10)
    assert len(statements(queries, "INSERT")) == 4  # the parent + ceil(25 / 10) bulk inserts (<= 8)
    assert Workflow.objects.filter(key__startswith="p$").count() == 25


def test_each_batch_costs_one_insert_one_idle_select_and_one_cursor_update(chrono_forge_env):
    wb.FanOut.perform_later("p", source="list", n=30, of=10)
    with capture() as queries:
        wb.FanOut._execute("p")  # the dispatching pass alone
    logs = ExecutionLog._meta.db_table
    assert len(statements(queries, "INSERT")) == 3
    idle_selects = [sql for sql in statements(queries, "SELECT") if '"started_at" IS NULL' in sql]
    assert len(idle_selects) == 3
    cursor_updates = [sql for sql in statements(queries, "UPDATE", logs)]
    # 3 cursor advances + the seal + the merge's token on the branch log
    assert len(cursor_updates) == 5
    pending = [
        run for run in chrono_forge_env.pending if run.key != "p"
    ]  # (perform_later's run of p)
    assert len(pending) == 31  # 30 children + 1 poller


def test_the_batch_is_capped_by_the_database_parameter_limit(chrono_forge_env):
    from chrono_forge.primitives.branch import batch_size

    columns = sum(1 for f in Workflow._meta.concrete_fields if not f.primary_key)
    limit = connection.features.max_query_params or 65535  # None on PostgreSQL (psycopg: 65535)
    assert batch_size(100_000, "default") == min(100_000, limit // columns)
    assert batch_size(100_000, "default") * columns <= limit
    assert batch_size(10, "default") == 10


@pytest.mark.sqlite_only
def test_a_fan_out_respects_sqlites_variable_limit(chrono_forge_env):
    """SQLite refuses a statement with more bind variables than its limit: lower the limit to the
    historical default (999) and fan out more children than one INSERT may hold."""
    import sqlite3

    from chrono_forge.primitives.branch import batch_size

    connection.ensure_connection()
    raw = connection.connection
    previous = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    try:
        size = batch_size(10_000, "default")
        assert size == 999 // sum(1 for f in Workflow._meta.concrete_fields if not f.primary_key)
        n = size + 7  # one full INSERT and a partial one
        with capture() as queries:
            fan_out(chrono_forge_env, "p", n)
    finally:
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, previous)
    assert len(statements(queries, "INSERT")) == 1 + 2
    assert Workflow.objects.filter(key__startswith="p$", state="completed").count() == n


def test_the_dispatching_pass_costs_the_same_for_3_and_30_children(chrono_forge_env):
    counts = {}
    for key, n in (("small", 3), ("large", 30)):
        wb.FanOut.perform_later(key, source="list", n=n)
        with capture() as queries:
            wb.FanOut._execute(key)  # spawns every child in one batch, arms the poller, parks
        counts[n] = len(queries.captured_queries)
    assert counts[3] == counts[30]


@pytest.mark.django_db(transaction=True)
def test_a_spawned_childs_first_pass_writes_its_lock_with_its_step(chrono_forge_env):
    """A child's first delivery carries its due time as a token, like perform_later's, so its
    first pass writes its lock with its first write: a trivial child costs 2 commits (its lock
    with its step's INSERT, then the step's completion with the marker and the release)."""
    wb.FanOut.perform_later("tok", source="list", n=2)
    [parent] = chrono_forge_env.pending
    tasks.run_workflow(*parent.args, **parent.kwargs)  # the dispatching pass only
    children = [run for run in chrono_forge_env.pending if (run.key or "").startswith("tok$")]
    assert len(children) == 2
    for run in children:
        row = Workflow.objects.get(key=run.key)
        assert run.internal["token"] == token_for(row.next_run_at)
    child = children[0]
    with SqlLog() as sql:
        tasks.run_workflow(*child.args, **child.kwargs)
    assert Workflow.objects.get(key=child.key).state == "completed"
    assert (len(sql.data_statements), sql.commits) == (6, 2), sql.dump()
