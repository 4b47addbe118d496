"""The django-q2 dispatcher against the real ORM broker tables (no qcluster), and the other-broker
path."""

from __future__ import annotations

import ast
from datetime import timedelta

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule
from django_q.signing import SignedPackage

from chrono_forge import dispatch
from chrono_forge.dispatch.django_q import DjangoQDispatcher
from tests import core_brokers
from tests.core_sql import SqlLog

pytestmark = pytest.mark.django_db

JOB = "tests.workflows_core.Counter"


def payloads() -> list[dict]:
    return [SignedPackage.loads(row.payload) for row in OrmQ.objects.order_by("id")]


def test_a_pass_due_now_is_one_queue_row_with_no_user_kwargs():
    DjangoQDispatcher().enqueue(JOB, "k", attempt=2, token="t")
    [task] = payloads()
    assert task["func"] == dispatch.TASK and task["args"] == (JOB, "k")
    assert task["kwargs"] == {"attempt": 2, "token": "t"}
    assert task["ack_failure"] is True and task["name"] == "chrono_forge Counter(k)"
    assert OrmQ.objects.get().lock <= timezone.now()
    # chrono_forge's own logs hold the pass: django-q2 saves no result row for a successful one
    assert task["save"] is False


def test_a_dispatcher_subclass_may_keep_django_q_result_rows():
    class Saving(DjangoQDispatcher):
        save_results = True

    Saving().enqueue(JOB, "k")
    Saving().enqueue_many([(JOB, "bulk")])
    assert [task["save"] for task in payloads()] == [True, True]


def test_a_pass_due_later_is_invisible_until_its_due_time():
    due = timezone.now() + timedelta(minutes=5)
    DjangoQDispatcher().enqueue(JOB, "k", run_at=due, token=due.isoformat())
    row = OrmQ.objects.get()
    assert row.lock == due
    broker = ORM(list_key=Conf.CLUSTER_NAME)
    assert broker.queue_size() == 0 and broker.lock_size() == 1
    assert SignedPackage.loads(row.payload)["kwargs"] == {"token": due.isoformat()}


def test_the_cluster_setting_names_the_queue():
    with override_settings(CHRONO_FORGE={"CLUSTER": "workflows"}):
        DjangoQDispatcher().enqueue(JOB, "k")
    assert OrmQ.objects.get().key == "workflows"
    assert payloads()[0]["cluster"] == "workflows"


def test_bulk_enqueue_is_one_insert():
    with SqlLog() as sql:
        DjangoQDispatcher().enqueue_many([(JOB, f"k{i}") for i in range(5)])
    assert [task["args"][1] for task in payloads()] == [f"k{i}" for i in range(5)]
    assert sql.count("INSERT", "django_q_ormq") == 1


def test_continuation_arguments_may_not_shadow_django_q_options():
    with pytest.raises(ValueError, match="timeout"):
        dispatch.enqueue(JOB, "k", timeout=5)
    assert OrmQ.objects.count() == 0


@pytest.fixture
def list_broker(monkeypatch):
    monkeypatch.setattr(Conf, "BROKER_CLASS", "tests.core_brokers.ListBroker")
    core_brokers.SENT.clear()
    yield core_brokers.SENT
    core_brokers.SENT.clear()


def test_other_brokers_get_now_passes_directly(list_broker):
    DjangoQDispatcher().enqueue(JOB, "k")
    [package] = list_broker
    assert SignedPackage.loads(package)["args"] == (JOB, "k")
    assert Schedule.objects.count() == 0


def test_other_brokers_get_one_once_schedule_per_workflow(list_broker):
    first = timezone.now() + timedelta(minutes=1)
    later = first + timedelta(minutes=1)
    dispatcher = DjangoQDispatcher()
    dispatcher.enqueue(JOB, "k", run_at=first, token=first.isoformat())
    dispatcher.enqueue(JOB, "k", run_at=later, token=later.isoformat(), attempt=1)
    dispatcher.enqueue(JOB, "other", run_at=later)
    assert list_broker == [] and Schedule.objects.count() == 2
    schedule = Schedule.objects.get(args=repr((JOB, "k")))
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        dispatch.TASK,
        Schedule.ONCE,
        -1,
    )
    assert schedule.next_run == later
    assert ast.literal_eval(schedule.kwargs) == {"token": later.isoformat(), "attempt": 1}


def stranded(count: int) -> None:
    from chrono_forge.models import Workflow

    locked_at = timezone.now() - timedelta(days=1)
    Workflow.objects.bulk_create(
        Workflow(job_class=JOB, key=f"k{i}", state="running", locked_by="dead", locked_at=locked_at)
        for i in range(count)
    )


def bulk_inserts(rows: int) -> int:
    """INSERTs Django's bulk_create needs for ``rows`` OrmQ rows (SQLite caps the parameters of
    one statement, so 500 rows may take more than one)."""
    fields = [f for f in OrmQ._meta.concrete_fields if not f.primary_key]
    batch = min(500, connections[Conf.ORM].ops.bulk_batch_size(fields, [None] * rows) or rows)
    return -(-rows // batch)


@pytest.mark.parametrize("count,pages", [(1, [1]), (1200, [500, 500, 200])])
def test_reaping_is_one_bulk_queue_insert_per_page_of_500_however_many_are_stranded(count, pages):
    from chrono_forge.models import Workflow

    stranded(count)
    with SqlLog() as sql:
        assert Workflow.objects.reap_stalled() == count
    inserts = sum(bulk_inserts(rows) for rows in pages)
    assert sql.count("INSERT", "django_q_ormq") == inserts
    # one read per page, and the last one reads no row
    assert sql.count("SELECT", "chrono_forge_workflow") == len(pages) + 1
    assert len(sql.data_statements) == inserts + len(pages) + 1
    assert sorted(task["args"][1] for task in payloads()) == sorted(f"k{i}" for i in range(count))


def test_a_bulk_reap_carries_its_threshold_in_every_delivery():
    from chrono_forge.models import Workflow

    stranded(3)
    assert Workflow.objects.reap_stalled(stale_after=timedelta(minutes=5)) == 3
    assert [task["kwargs"] for task in payloads()] == [{"stale_after": 300.0}] * 3


def test_a_broker_error_on_a_reap_page_is_logged_and_the_sweep_goes_on(monkeypatch, caplog):
    from chrono_forge.models import Workflow

    stranded(3)
    monkeypatch.setattr(
        DjangoQDispatcher, "_push_many", lambda *a: (_ for _ in ()).throw(OSError("down"))
    )
    assert (
        Workflow.objects.reap_stalled() == 0
    )  # still running under a stale lock: reaped next time
    assert "could not re-enqueue 3 workflow(s)" in caplog.text
    assert Workflow.objects.stranded().count() == 3


def overdue(count: int, *, state: str = "idle", prefix: str = "o") -> None:
    """``count`` rows whose delivery was due an hour ago (each a second apart: distinct tokens)."""
    from chrono_forge.models import Workflow

    due = timezone.now() - timedelta(hours=1)
    Workflow.objects.bulk_create(
        Workflow(
            job_class=JOB, key=f"{prefix}{i}", state=state, next_run_at=due - timedelta(seconds=i)
        )
        for i in range(count)
    )


@pytest.mark.parametrize("count,pages", [(1, [1]), (1200, [500, 500, 200])])
def test_resuming_overdue_runs_is_one_bulk_queue_insert_per_page_of_500(count, pages):
    from chrono_forge.models import Workflow

    overdue(count)
    due = dict(Workflow.objects.values_list("key", "next_run_at"))
    with SqlLog() as sql:
        assert Workflow.objects.resume_overdue() == count
    inserts = sum(bulk_inserts(rows) for rows in pages)
    assert sql.count("INSERT", "django_q_ormq") == inserts
    # one read per page, and the last one reads no row
    assert sql.count("SELECT", "chrono_forge_workflow") == len(pages) + 1
    assert len(sql.data_statements) == inserts + len(pages) + 1
    # each delivery carries its own row's token: the original, if it arrives, finds it superseded
    tokens = {task["args"][1]: task["kwargs"]["token"] for task in payloads()}
    assert tokens == {key: at.isoformat() for key, at in due.items()}


def test_bulk_redeliveries_of_operator_retries_are_sent_as_retries():
    from chrono_forge.models import Workflow

    overdue(1, prefix="idle")
    overdue(1, state="stalled", prefix="stalled")
    overdue(1, state="cancelled", prefix="cancelled")  # a pending forced retry
    assert Workflow.objects.resume_overdue() == 3
    flags = {
        task["args"][1]: {name: v for name, v in task["kwargs"].items() if name != "token"}
        for task in payloads()
    }
    assert flags == {
        "idle0": {},
        "stalled0": {"retry_workflow": True},
        "cancelled0": {"retry_workflow": True, "resume_cancelled": True},
    }


def test_a_broker_error_on_an_overdue_page_keeps_the_rows_due_for_the_next_sweep(
    monkeypatch, caplog
):
    from chrono_forge.models import Workflow

    overdue(3)
    monkeypatch.setattr(
        DjangoQDispatcher, "_push_many", lambda *a: (_ for _ in ()).throw(OSError("down"))
    )
    assert Workflow.objects.resume_overdue() == 0
    assert "could not re-enqueue 3 workflow(s)" in caplog.text
    assert Workflow.objects.overdue().count() == 3  # scheduled still: the next sweep resends
    monkeypatch.undo()
    assert Workflow.objects.resume_overdue() == 3


def test_bulk_enqueue_refuses_per_run_arguments_that_shadow_django_q_options():
    with pytest.raises(ValueError, match="timeout"):
        dispatch.enqueue_many([(JOB, "k", {"timeout": 5})])
    assert OrmQ.objects.count() == 0


def test_bulk_enqueue_refuses_arguments_that_shadow_django_q_options():
    with pytest.raises(ValueError, match="timeout"):
        dispatch.enqueue_many([(JOB, "k")], timeout=5)
    assert OrmQ.objects.count() == 0
