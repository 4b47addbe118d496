"""The django-q2 dispatcher against the real ORM broker tables (no qcluster), and the other-broker
path."""

from __future__ import annotations

import ast
from datetime import timedelta

import pytest
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
