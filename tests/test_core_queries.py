"""Query and commit budgets.

How statements and commits are counted (see tests/core_sql.py): a ``connection.execute_wrapper``
records every statement and whether ``connection.in_atomic_block`` was set when it ran, and
``connection.commit`` is wrapped to count the commits Django issues at the end of an outermost
``atomic()`` block. Commits = writes run outside any atomic block (autocommit: one commit each) +
``commit()`` calls. Transaction control (BEGIN, SAVEPOINT) is not counted as a statement. The commit
tests use ``transactional_db``, so commits are real; the in-memory dispatcher is used, so the
broker's own writes (one OrmQ INSERT per enqueue with django-q2's ORM broker, plus the worker's
claim/ack) are not included.

Measured for a trivial top-level workflow (one durably_execute returning a small value, no context
write), ``perform_later`` + its single pass, on SQLite and on PostgreSQL alike:

    perform_later   find S + INSERT (in atomic)                              2 statements, 1 commit
    the pass        lock read (S), lock U + step I (one atomic: a first pass writes its lock with
                    its first write), completion (step U + marker I + wf U,
                    one atomic)                                              6 statements, 2 commits
    total           2S 3I 3U = 8 statements, 3 commits (reference: 6S 3I 4U, 6 commits)

and per new step: 2 statements (I + U) and 1 commit (a step's completed UPDATE rides in the
transaction of the pass's next write: the next step's INSERT, or the completion; the cancellation
check before the next body rides in that UPDATE's WHERE); per replayed completed step: 0.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection

from chrono_forge.executor import LOCK_COLUMNS, Delivery
from chrono_forge.models import ExecutionLog, Workflow
from chrono_forge.steps import StepLogs
from tests import workflows_core as w
from tests.core_sql import ERROR_LOG, EXECUTION_LOG, WORKFLOW, SqlLog

transactional = pytest.mark.django_db(transaction=True)


def run_pass(env) -> SqlLog:
    """Run exactly the due continuations, recording their SQL."""
    with SqlLog() as sql:
        env.run_due()
    return sql


def no_commit_between(sql: SqlLog, first: int, second: int) -> bool:
    """True when no commit happened after statement ``first`` and up to statement ``second``."""
    return not any(first < point <= second for point in sql.commit_points)


# -- the trivial top-level workflow ----------------------------------------------------------------
@transactional
def test_trivial_top_level_workflow_budget(chrono_forge_env):
    with SqlLog() as enqueue:
        w.OneStep.perform_later("trivial")
    with SqlLog() as one_pass:
        assert chrono_forge_env.run_all() == 1
    assert Workflow.objects.get(key="trivial").state == "completed"
    print(f"\n[{connection.vendor}] perform_later: {enqueue.summary()}; pass: {one_pass.summary()}")
    assert (len(enqueue.data_statements), enqueue.commits) == (2, 1), enqueue.dump()
    assert len(one_pass.data_statements) == 6, one_pass.dump()
    assert one_pass.commits == 2, one_pass.dump()
    assert one_pass.count("SELECT") == 1  # the lock; a first pass knows it has no step logs yet
    # the lock's UPDATE commits with the step's INSERT, before the body runs
    lock, insert = one_pass.data_statements[1:3]
    assert (lock.kind, lock.table, insert.kind, insert.table) == (
        "UPDATE",
        WORKFLOW,
        "INSERT",
        EXECUTION_LOG,
    )
    assert not {1, 2} & set(one_pass.commit_points) and 3 in one_pass.commit_points
    # reference: 13
    assert len(enqueue.data_statements) + len(one_pass.data_statements) <= 6 + 3 + 4
    assert enqueue.commits + one_pass.commits <= 3  # the floor: enqueue 1 commit + a pass 2


# -- a new step ------------------------------------------------------------------------------------
@transactional
@pytest.mark.parametrize("later_pass", [False, True], ids=["first-pass", "later-pass"])
def test_a_new_step_costs_2_statements_and_1_commit(chrono_forge_env, later_pass):
    costs = {}
    for n in (1, 2, 5):
        key = f"steps-{n}"
        wf = w.Steps.perform_later(key, n=n)
        if later_pass:  # make the steps "new" on a pass that is not the workflow's first
            Workflow.objects.filter(pk=wf.pk).update(started_at=chrono_forge_env.now)
        sql = run_pass(chrono_forge_env)
        assert Workflow.objects.get(pk=wf.pk).state == "completed"
        costs[n] = (len(sql.data_statements), sql.commits)
    per_step = (costs[2][0] - costs[1][0], costs[2][1] - costs[1][1])
    assert costs[5] == (costs[1][0] + 4 * per_step[0], costs[1][1] + 4 * per_step[1])  # linear
    print(f"\n[{connection.vendor}] per new step: {per_step[0]} statements, {per_step[1]} commits")
    # INSERT (attempts=1 in it) before the side effect, UPDATE completed after it; the UPDATE
    # commits together with the next write of the pass, so each step costs one commit. The
    # cancellation check before every body but the pass's first is no statement of its own: the
    # previous step's completed UPDATE is conditional on the run not being cancelled.
    assert per_step == (2, 1)


@transactional
def test_a_three_step_first_pass_reads_the_row_once_and_commits_4_times(chrono_forge_env):
    """The pass of a 3-step workflow (bench/throughput.py's): the lock read, then writes only. The
    cancellation check before the second and third bodies is in the completed UPDATE of the step
    before them, in the transaction that INSERTs the next step, so it costs no SELECT."""
    w.Steps.perform_later("three", n=3)
    sql = run_pass(chrono_forge_env)
    assert Workflow.objects.get(key="three").state == "completed"
    shape = [(s.kind, s.table) for s in sql.data_statements]
    lock_and_first = [("UPDATE", WORKFLOW), ("INSERT", EXECUTION_LOG)]
    next_step = [("UPDATE", EXECUTION_LOG), ("INSERT", EXECUTION_LOG)]
    assert shape == [
        ("SELECT", WORKFLOW),  # the lock read
        *lock_and_first,
        *next_step,  # step_0 completed (unless cancelled), step_1's attempt
        *next_step,  # step_1 completed (unless cancelled), step_2's attempt
        *next_step,  # step_2 completed, the completion marker
        ("UPDATE", WORKFLOW),  # the release
    ], sql.dump()
    assert sql.commits == 4, sql.dump()
    completed = sql.of("UPDATE", EXECUTION_LOG)
    assert ["NOT EXISTS" in s.sql for s in completed] == [True, True, False]
    # each step's completion commits with the next write, before the next body
    assert sql.commit_points == [3, 5, 7, 10], sql.dump()


@transactional
def test_a_finished_step_is_committed_before_the_next_step_body_runs(chrono_forge_env):
    """The completed UPDATE is deferred to the next write, but that write (the next step's INSERT)
    commits before the next body starts: outside any transaction, the first step reads completed."""
    w.CheckpointProbe.perform_later("probe")
    chrono_forge_env.run_all()
    assert w.FLAGS["seen_before_second"] == (False, "completed", "first result")
    log = ExecutionLog.objects.get(step_name="durably_execute$second")
    assert log.state == "completed"  # the last step's UPDATE committed with the completion


# -- replay ----------------------------------------------------------------------------------------
def park_after(env, n: int) -> Workflow:
    """A workflow with ``n`` completed steps parked on a gate step (failing, halted for a 60 s
    retry)."""
    wf = w.Steps.perform_later(f"parked-{n}", n=n, gate=True)
    env.run_due()
    assert Workflow.objects.get(pk=wf.pk).state == "idle" and len(env.pending) == 1
    return wf


@pytest.mark.django_db
def test_replaying_completed_steps_costs_nothing_per_step(chrono_forge_env):
    resumed = {}
    for n in (3, 25, 30):
        park_after(chrono_forge_env, n)
        chrono_forge_env.advance(60)
        resumed[n] = run_pass(chrono_forge_env)
        chrono_forge_env.drop_pending()  # the gate is still closed: forget its next retry
    shape = {n: [(s.kind, s.table) for s in sql.data_statements] for n, sql in resumed.items()}
    assert shape[3] == shape[25] == shape[30], resumed[30].dump()
    # one bulk read of the step logs per pass, whatever N is
    assert (
        resumed[3].count("SELECT", EXECUTION_LOG) == resumed[25].count("SELECT", EXECUTION_LOG) == 1
    )
    # the resume: lock S+U, bulk S, gate attempt U, error I, release U (+ nothing per completed
    # step)
    assert resumed[30].count("INSERT", EXECUTION_LOG) == 0
    assert resumed[30].count("INSERT", ERROR_LOG) == 1
    assert w.calls("Steps.gate") == 6


@pytest.mark.django_db
def test_the_step_cache_includes_coordination_logs_and_excludes_repetitions():
    wf = Workflow.objects.create(job_class="tests.workflows_core.Steps", key="cache")
    for name in (
        "durably_execute$send_email",
        "durably_repeat$poll",
        "durably_repeat$poll$1700000000",
        "$workflow_retry$1700000000",
    ):
        ExecutionLog.objects.create(workflow=wf, step_name=name, state="completed")
    steps = StepLogs(wf.pk)
    assert sorted(steps.names()) == [
        "$workflow_retry$1700000000",
        "durably_execute$send_email",
        "durably_repeat$poll",
    ]
    assert steps.get("durably_repeat$poll$1700000000") is None


# -- lock and release ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_lock_acquire_is_one_select_of_the_pass_columns_and_one_update(chrono_forge_env):
    w.OneStep.perform_later("lock")
    with SqlLog() as sql:
        Delivery(w.OneStep, "lock").acquire()
    select, update = sql.data_statements
    assert (select.kind, select.table, update.kind, update.table) == (
        "SELECT",
        WORKFLOW,
        "UPDATE",
        WORKFLOW,
    )
    columns = set(re.findall(r'"chrono_forge_workflow"\."(\w+)"', select.sql.split(" FROM ", 1)[0]))
    assert columns == set(LOCK_COLUMNS)
    assert not columns & {"created", "modified", "completed_at"}
    if connection.vendor == "postgresql":
        assert select.sql.rstrip().endswith("FOR UPDATE")
    assert select.in_atomic and update.in_atomic


@pytest.mark.django_db
def test_release_is_one_conditional_update_and_reads_nothing(chrono_forge_env):
    w.OneStep.perform_later("release")
    run = Delivery(w.OneStep, "release").acquire()
    assert run is not None
    with SqlLog() as sql:
        run.release("idle")
    [update] = sql.data_statements
    assert (update.kind, update.table) == ("UPDATE", WORKFLOW)
    where = update.sql.split(" WHERE ", 1)[1]
    assert '"locked_by" =' in where
    assert not any(s.kind == "SELECT" for s in sql.statements)  # never a SELECT of kwargs/context


# -- lifetime invariants ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_workflow_row_is_inserted_once_and_each_step_log_once(chrono_forge_env):
    with SqlLog() as sql:
        w.ReplayProbe.perform_later("life")
        chrono_forge_env.run_due()
        w.ReplayProbe.perform_later("life")  # an external wake-up finds the row by SELECT
        chrono_forge_env.run_all()
    wf = Workflow.objects.get(key="life")
    assert wf.state == "completed" and w.calls("ReplayProbe.perform") >= 3
    assert sql.count("INSERT", WORKFLOW) == 1
    assert sql.count("INSERT", EXECUTION_LOG) == wf.execution_logs.count() == 3


# -- markers ---------------------------------------------------------------------------------------
@transactional
def test_completion_marker_is_one_insert_in_the_completed_update_transaction(chrono_forge_env):
    w.NoSteps.perform_later("marker")
    sql = run_pass(chrono_forge_env)
    assert sql.count("INSERT", EXECUTION_LOG) == 1 and sql.count("UPDATE", EXECUTION_LOG) == 0
    statements = sql.data_statements
    marker = next(
        i for i, s in enumerate(statements) if s.kind == "INSERT" and s.table == EXECUTION_LOG
    )
    completed = next(
        i
        for i, s in enumerate(statements)
        if s.kind == "UPDATE" and s.table == WORKFLOW and i > marker
    )
    assert statements[marker].in_atomic and statements[completed].in_atomic
    assert no_commit_between(sql, marker, completed), sql.dump()
    log = ExecutionLog.objects.get(workflow__key="marker")
    assert (log.step_name, log.state, log.attempts) == ("$workflow_completion$", "completed", 1)
    assert log.completed_at is not None
    assert Workflow.objects.get(key="marker").state == "completed"


@transactional
def test_failure_marker_is_one_insert_and_no_update(chrono_forge_env):
    w.FailsOnce.perform_later("failure")
    sql = run_pass(chrono_forge_env)
    assert sql.count("INSERT", EXECUTION_LOG) == 1 and sql.count("UPDATE", EXECUTION_LOG) == 0
    assert sql.count("INSERT", ERROR_LOG) == 1
    statements = sql.data_statements
    marker = next(
        i for i, s in enumerate(statements) if s.kind == "INSERT" and s.table == EXECUTION_LOG
    )
    failed = next(
        i
        for i, s in enumerate(statements)
        if s.kind == "UPDATE" and s.table == WORKFLOW and i > marker
    )
    assert no_commit_between(sql, marker, failed)
    log = ExecutionLog.objects.get(workflow__key="failure")
    assert (
        log.step_name.startswith("$workflow_failure$")
        and log.state == "completed"
        and log.attempts == 1
    )
    assert Workflow.objects.get(key="failure").state == "failed"


@pytest.mark.django_db
def test_first_run_of_a_step_has_no_attempt_only_update_and_a_retry_has_one(chrono_forge_env):
    w.OneStep.perform_later("first")
    first = run_pass(chrono_forge_env)
    assert not any('"attempts"' in s.sql for s in first.of("UPDATE", EXECUTION_LOG))
    w.FlakyOnce.perform_later("retry")
    run_pass(chrono_forge_env)  # fails: the INSERT carries attempts=1
    chrono_forge_env.advance(1)
    retry = run_pass(chrono_forge_env)
    assert sum('"attempts"' in s.sql for s in retry.of("UPDATE", EXECUTION_LOG)) == 1, retry.dump()


@pytest.mark.django_db
def test_markers_on_a_later_pass_read_no_step_logs(chrono_forge_env):
    """A pass that touched no step does not load the step logs just to write its marker."""
    w.PermanentFailure.perform_later("later")
    chrono_forge_env.run_due()  # attempt 0 fails; the continuation is attempt 1
    chrono_forge_env.advance(3600)
    retried = run_pass(chrono_forge_env)
    assert retried.count("SELECT", EXECUTION_LOG) == 0, retried.dump()
    w.NoSteps.perform_later("done-later")
    # not a first pass
    Workflow.objects.filter(key="done-later").update(started_at=chrono_forge_env.now)
    completed = run_pass(chrono_forge_env)
    assert Workflow.objects.get(key="done-later").state == "completed"
    assert completed.count("SELECT", EXECUTION_LOG) == 0, completed.dump()
    assert completed.count("INSERT", EXECUTION_LOG) == 1
