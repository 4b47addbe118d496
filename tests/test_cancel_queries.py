"""Cancelling a parent with N children costs a fixed number of statements per batch of children
(one SELECT of the ids, one conditional UPDATE, one SELECT of their own children), whatever N is."""

from __future__ import annotations

import pytest

from chrono_forge import cancellation
from chrono_forge.models import Workflow
from tests import workflows_cancel as wc
from tests.core_sql import WORKFLOW, SqlLog

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 10


def cancel_cost(env, key: str, children: int) -> SqlLog:
    wc.Parent.perform_now(key, children=children)
    assert Workflow.objects.filter(key__startswith=f"{key}$").count() == children
    with SqlLog() as sql:
        wc.Parent.cancel(key, reason="budget")
    assert set(
        Workflow.objects.filter(key__startswith=f"{key}$").values_list("state", flat=True)
    ) == {"cancelled"}
    return sql


def test_cancel_statements_grow_by_a_constant_per_batch_of_children(chrono_forge_env, monkeypatch):
    monkeypatch.setattr(cancellation, "CANCEL_BATCH_SIZE", BATCH)
    costs = {n: len(cancel_cost(chrono_forge_env, f"p{n}", n).data_statements) for n in (15, 35)}
    batches = {n: -(-n // BATCH) for n in costs}  # 2 and 4 batches of children
    per_batch = (costs[35] - costs[15]) / (batches[35] - batches[15])
    print(f"\ncancel: {costs} statements; {per_batch:g} per batch of {BATCH} children")
    assert per_batch == 3  # ids SELECT, UPDATE, grandchildren SELECT
    sql = cancel_cost(chrono_forge_env, "p100", 100)
    # 10 full batches: one more (empty) SELECT of ids tells the last full batch was the last
    assert len(sql.data_statements) == costs[15] + 3 * (10 - batches[15]) + 1
    assert sql.count("UPDATE", WORKFLOW) == 1 + 10  # the parent, then one per batch
