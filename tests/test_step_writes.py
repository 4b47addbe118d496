"""A step's two writes (chrono_forge.steps.insert_step, update_step) store what the ORM would.

They run SQL written once instead of ``ExecutionLog.objects.create`` and ``.update()``: each test
writes the same values both ways and compares the rows read back, column by column.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chrono_forge import clock
from chrono_forge.models import ExecutionLog, Workflow
from chrono_forge.steps import insert_step, update_step

pytestmark = pytest.mark.django_db

#: Values of every column a step log can be born with (NUL-free text, a nested JSON result).
FIELDS = {
    "state": ExecutionLog.STATE.pending,
    "attempts": 1,
    "error_class": "ValueError",
    "error_message": "bad ünïcode ☃",
    "result": {"nested": [1, 2.5, None, "x"], "flag": True},
    "metadata": {"retry_counts": {"default": 2}},
}


def stored(pk) -> dict:
    row = ExecutionLog.objects.filter(pk=pk).values().get()
    return {name: value for name, value in row.items() if name not in ("id", "step_name")}


def workflow(key: str = "k") -> Workflow:
    return Workflow.objects.create(job_class="tests.workflows_core.Steps", key=key)


def test_insert_step_stores_every_column_as_create_does():
    run = workflow()
    now = clock.now()
    times = {"created": now, "modified": now, "started_at": now, "last_executed_at": now}
    by_orm = ExecutionLog.objects.create(workflow=run, step_name="a", **times, **FIELDS)
    with CaptureQueriesContext(connection) as queries:
        log = insert_step(ExecutionLog(workflow_id=run.pk, step_name="b", **times, **FIELDS))
    assert len(queries) == 1 and queries[0]["sql"].startswith("INSERT")
    assert log.pk is not None and log.pk != by_orm.pk
    assert not log._state.adding
    assert stored(log.pk) == stored(by_orm.pk)
    assert ExecutionLog.objects.get(pk=log.pk).step_name == "b"


def test_insert_step_fills_the_defaults_as_create_does():
    run = workflow()
    by_orm = ExecutionLog.objects.create(workflow=run, step_name="a")
    log = insert_step(ExecutionLog(workflow_id=run.pk, step_name="b"))
    orm_row, row = stored(by_orm.pk), stored(log.pk)
    # created/modified default to the time of the write: equal to the microsecond only by chance
    assert {k: v for k, v in row.items() if k not in ("created", "modified")} == {
        k: v for k, v in orm_row.items() if k not in ("created", "modified")
    }
    assert row["created"] is not None and row["modified"] is not None


def test_update_step_writes_the_columns_as_update_does():
    run = workflow()
    now = clock.now()
    first = ExecutionLog.objects.create(workflow=run, step_name="a", created=now, modified=now)
    second = ExecutionLog.objects.create(workflow=run, step_name="b", created=now, modified=now)
    done = clock.now() + timedelta(seconds=5)
    fields = {"state": "completed", "completed_at": done, "modified": done, "result": [{"a": 1}]}
    ExecutionLog.objects.filter(pk=first.pk).update(**fields)
    with CaptureQueriesContext(connection) as queries:
        assert update_step(second.pk, dict(fields)) == 1
    assert len(queries) == 1 and queries[0]["sql"].startswith("UPDATE")
    assert stored(second.pk) == stored(first.pk)
    # None stores SQL NULL in a JSON column, as the ORM's update() does
    assert update_step(second.pk, {"result": None}) == 1
    assert ExecutionLog.objects.filter(pk=second.pk, result__isnull=True).exists()


def test_update_step_unless_cancelled_writes_nothing_once_the_run_is_cancelled():
    run, other = workflow("k"), workflow("other")
    log = ExecutionLog.objects.create(workflow=run, step_name="a")
    # a cancelled run elsewhere does not matter: only the given workflow is checked
    Workflow.objects.filter(pk=other.pk).update(state=Workflow.STATE.cancelled)
    assert update_step(log.pk, {"attempts": 2}, unless_cancelled=run.pk) == 1
    Workflow.objects.filter(pk=run.pk).update(state=Workflow.STATE.cancelled)
    with CaptureQueriesContext(connection) as queries:
        assert update_step(log.pk, {"attempts": 3}, unless_cancelled=run.pk) == 0
    assert len(queries) == 1 and "NOT EXISTS" in queries[0]["sql"]
    assert ExecutionLog.objects.get(pk=log.pk).attempts == 2
    assert update_step(log.pk, {"attempts": 4}) == 1  # without the check it writes
