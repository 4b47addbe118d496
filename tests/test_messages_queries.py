"""Budgets of messages (see tests/core_sql.py for how statements and commits are counted; the
in-memory dispatcher is used, so a broker's own queue write is not included):

    send              lock the run (S FOR UPDATE) + the wake-up (U) + the message (I)
                                                                   3 statements, 1 commit
    send, repeated    lock + the idempotency lookup (S): nothing written, 1 commit
    receive, found    the message (S) + the step (I) + consume (U), one atomic   1 commit
    receive, replayed 0 statements
"""

from __future__ import annotations

import pytest
from django.db import connection

from chrono_forge.models import Message
from tests import workflows_messages as wm
from tests.core_sql import EXECUTION_LOG, WORKFLOW, SqlLog

transactional = pytest.mark.django_db(transaction=True)
MESSAGE = Message._meta.db_table


@transactional
def test_a_send_is_one_insert_and_the_wake_in_one_commit(chrono_forge_env):
    wm.Inbox.perform_later("o1")
    chrono_forge_env.run_all()
    with SqlLog() as sql:
        wm.Inbox.send("o1", "payment", {"amount": 5})
    print(f"\n[{connection.vendor}] send: {sql.summary()}")
    assert [(s.kind, s.table) for s in sql.data_statements] == [
        ("SELECT", WORKFLOW),
        ("UPDATE", WORKFLOW),
        ("INSERT", MESSAGE),
    ], sql.dump()
    assert sql.commits == 1
    assert "FOR UPDATE" in sql.data_statements[0].sql or connection.vendor == "sqlite"


@transactional
def test_a_send_with_an_idempotency_key_adds_one_lookup(chrono_forge_env):
    wm.Inbox.perform_later("o1")
    chrono_forge_env.run_all()
    with SqlLog() as first:
        wm.Inbox.send("o1", "payment", 1, idempotency_key="evt")
    with SqlLog() as repeat:
        wm.Inbox.send("o1", "payment", 1, idempotency_key="evt")
    assert (len(first.data_statements), first.commits) == (4, 1), first.dump()
    assert [(s.kind, s.table) for s in repeat.data_statements] == [
        ("SELECT", WORKFLOW),
        ("SELECT", MESSAGE),
    ], repeat.dump()
    assert repeat.count("INSERT") == repeat.count("UPDATE") == 0


@transactional
def test_consuming_commits_the_step_and_the_message_together(chrono_forge_env):
    wm.Loop.perform_later("l", count=2)
    wm.Loop.send("l", "item", "x")
    chrono_forge_env.run_all()  # item-0 consumed, parked on item-1
    wm.Loop.send("l", "item", "y")
    with SqlLog() as one_pass:
        chrono_forge_env.run_all()
    print(
        f"\n[{connection.vendor}] a pass replaying one receive and consuming one: "
        f"{one_pass.summary()}"
    )
    statements = one_pass.data_statements
    # item-0 replays from the step logs (read once per pass); item-1 reads and consumes one message
    assert [s.kind for s in one_pass.of(table=MESSAGE)] == ["SELECT", "UPDATE"], one_pass.dump()
    consume = next(i for i, s in enumerate(statements) if s.table == MESSAGE and s.kind == "UPDATE")
    step = statements[consume - 1]
    assert (step.kind, step.table) == ("UPDATE", EXECUTION_LOG)  # the step's completion
    assert step.in_atomic and statements[consume].in_atomic
    assert consume not in one_pass.commit_points  # no commit between the two writes
    assert consume + 1 in one_pass.commit_points  # committed right after the consumption


@transactional
def test_a_replayed_receive_costs_no_statement(chrono_forge_env):
    wm.TwoTopics.perform_later("t")
    wm.TwoTopics.send("t", "b", 1)
    chrono_forge_env.run_all()  # b consumed, parked on a
    wm.TwoTopics.perform_later("t")  # a wake-up with no message: b replays, a parks again
    with SqlLog() as replay:
        chrono_forge_env.run_all()
    assert [(s.kind, s.table) for s in replay.data_statements] == [
        ("SELECT", WORKFLOW),  # the lock
        ("UPDATE", WORKFLOW),
        ("SELECT", EXECUTION_LOG),  # the pass's one read of its step logs
        ("SELECT", MESSAGE),  # receive "a" looks for a message; "b" replays with no statement
        ("UPDATE", EXECUTION_LOG),  # a's attempt
        ("UPDATE", WORKFLOW),  # the release, parked
    ], replay.dump()
