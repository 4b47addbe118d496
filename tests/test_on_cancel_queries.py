"""Statement budgets of the ``on_cancel`` hook: a bulk cancel of hooked children still costs three
statements per batch (the hook's due time rides in the batch's UPDATE; its deliveries are one bulk
enqueue per batch), a class without a hook costs exactly what it cost before any class had one,
and the hook pass itself has a fixed cost."""

from __future__ import annotations

import pytest

from chrono_forge import cancellation, registry
from chrono_forge.models import Workflow
from tests import workflows_cancel as wc
from tests import workflows_on_cancel as oc
from tests.core_sql import EXECUTION_LOG, WORKFLOW, SqlLog

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 10


def tree_cancel_cost(env, key: str, hooked: int) -> int:
    oc.Tree.perform_now(key, hooked=hooked, plain=0)
    env.drop_pending()
    with SqlLog() as sql:
        oc.Tree.cancel(key, reason="budget")
    kids = Workflow.objects.filter(key__startswith=f"{key}$")
    assert kids.count() == hooked
    assert not kids.filter(next_run_at__isnull=True).exists()  # every child is due for its hook
    assert len(env.pending) == hooked
    return len(sql.data_statements)


def test_a_bulk_cancel_of_hooked_children_costs_three_statements_per_batch(
    chrono_forge_env, monkeypatch
):
    monkeypatch.setattr(cancellation, "CANCEL_BATCH_SIZE", BATCH)
    costs = {n: tree_cancel_cost(chrono_forge_env, f"h{n}", n) for n in (15, 35)}
    per_batch = (costs[35] - costs[15]) / (-(-35 // BATCH) - -(-15 // BATCH))
    print(f"\ncancel of hooked children: {costs} statements; {per_batch:g} per batch of {BATCH}")
    assert per_batch == 3  # ids SELECT, UPDATE (with the hook's due time), grandchildren SELECT


def plain_cancel_cost(key: str) -> list[str]:
    wc.Parent.perform_now(key, children=25)
    with SqlLog() as sql:
        wc.Parent.cancel(key, reason="budget")
    assert not Workflow.objects.filter(key__startswith=key, next_run_at__isnull=False).exists()
    return [statement.kind for statement in sql.data_statements]


def test_a_class_without_a_hook_costs_the_same_whether_or_not_some_class_has_one(
    chrono_forge_env, monkeypatch
):
    monkeypatch.setattr(cancellation, "CANCEL_BATCH_SIZE", BATCH)
    with_hooks = plain_cancel_cost("with")
    hooked = [
        cls for cls in registry.registered().values() if callable(getattr(cls, "on_cancel", None))
    ]
    assert hooked  # this suite defines hooked classes
    for cls in hooked:
        registry.unregister(cls.job_class())
    try:
        without_hooks = plain_cancel_cost("without")
    finally:
        for cls in hooked:
            registry.register(cls)
    assert with_hooks == without_hooks
    # the row's lookup; the parent's batch; 3 batches of 25 children (10, 10, 5): 3 each
    assert len(with_hooks) == 1 + 3 + 3 * 3
    assert with_hooks.count("UPDATE") == 1 + 3


def test_the_hook_pass_costs_a_fixed_number_of_statements(chrono_forge_env):
    oc.Reserve.perform_later("cost")
    chrono_forge_env.run_due()
    oc.Reserve.cancel("cost", reason="why")
    chrono_forge_env.drop_pending(lambda run: run.kwargs.get("token") is None)
    assert len([run for run in chrono_forge_env.pending if run.run_at <= chrono_forge_env.now]) == 1
    with SqlLog() as sql:
        chrono_forge_env.run_due()
    assert oc.calls("hook") == 1
    print(f"\nthe hook pass: {sql.summary()}")
    # the delivery's plain read of the row (a scheduled delivery's lock needs no row lock, but a
    # due hook is decided under one), the row FOR UPDATE and its lease; the hook's log and the
    # reason; the attempt's INSERT; the completion and the release, together
    assert sql.count("SELECT", WORKFLOW) == 3 and sql.count("UPDATE", WORKFLOW) == 2
    assert sql.count("SELECT", EXECUTION_LOG) == 1 and sql.count("INSERT", EXECUTION_LOG) == 1
    assert sql.count("UPDATE", EXECUTION_LOG) == 1
    assert sql.commits == 3  # the lease, the attempt, the completion with the release
