"""A broker that refuses the enqueue: ``perform_later`` raises EnqueueError and leaves either
nothing (the queue shares chrono_forge's database: one transaction) or a row due now that the
overdue sweep starts (any other broker). Never a row that nothing will run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django_q.conf import Conf
from django_q.models import OrmQ

from chrono_forge import dispatch
from chrono_forge.dispatch.django_q import DjangoQDispatcher
from chrono_forge.exceptions import EnqueueError
from chrono_forge.models import Workflow
from chrono_forge.testing import workflow_env
from tests import workflows_core as w

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(monkeypatch):
    """``broker("tests.core_brokers.DownBroker")``: the django-q2 dispatcher with that broker."""

    def use(path: str) -> None:
        monkeypatch.setattr(Conf, "BROKER_CLASS", path)

    previous = dispatch.set_dispatcher(DjangoQDispatcher())
    yield use
    dispatch.set_dispatcher(previous)


def test_a_failing_queue_in_our_database_stores_nothing(broker):
    broker("tests.core_brokers.FailingORM")
    assert dispatch.transactional()
    with pytest.raises(EnqueueError, match="nothing was stored") as info:
        w.OneStep.perform_later("atomic")
    assert "RuntimeError: the broker failed after writing" in str(info.value)
    assert not Workflow.objects.filter(key="atomic").exists()
    assert OrmQ.objects.count() == 0  # the queue row it wrote rolled back with the workflow row


def test_inside_the_callers_transaction_too(broker):
    broker("tests.core_brokers.FailingORM")
    with pytest.raises(EnqueueError), transaction.atomic():
        w.OneStep.perform_later("atomic")
    assert not Workflow.objects.filter(key="atomic").exists() and OrmQ.objects.count() == 0


def test_a_working_queue_in_our_database_commits_row_and_pass_together(broker):
    broker("django_q.brokers.orm.ORM")
    row = w.OneStep.perform_later("atomic")
    # due now all the same: a queue row deleted later (or a worker dying with it) is re-sent by
    # the overdue sweep
    assert Workflow.objects.get(pk=row.pk).next_run_at is not None
    assert OrmQ.objects.count() == 1


def test_another_broker_down_keeps_a_row_the_overdue_sweep_starts(broker):
    broker("tests.core_brokers.DownBroker")
    assert not dispatch.transactional()
    with workflow_env() as env:
        dispatch.set_dispatcher(DjangoQDispatcher())
        with pytest.raises(EnqueueError, match="resume-overdue. starts it") as info:
            w.OneStep.perform_later("redis-down")
        assert "ConnectionError: Error 111 connecting" in str(info.value)
        row = Workflow.objects.get(key="redis-down")
        assert (row.state, row.next_run_at) == ("idle", env.now)
        dispatch.set_dispatcher(env.dispatcher)  # the broker is back
        assert Workflow.objects.resume_overdue() == 0  # not overdue yet: within the grace
        env.advance(timedelta(minutes=5, seconds=1))
        assert Workflow.objects.resume_overdue() == 1
        env.run_all()
    row.refresh_from_db()
    assert (row.state, row.next_run_at) == ("completed", None)
    assert w.calls("OneStep.work") == 1


def test_another_broker_up_runs_the_row_due_now_as_usual(broker):
    broker("tests.core_brokers.ListBroker")
    row = w.OneStep.perform_later("redis-up")
    assert Workflow.objects.get(pk=row.pk).next_run_at is not None  # the sweep's safety net
    w.OneStep._execute("redis-up")  # the delivery the broker took
    row.refresh_from_db()
    assert (row.state, row.next_run_at) == ("completed", None)


def test_a_refused_wake_up_leaves_the_existing_row_unchanged(broker):
    broker("tests.core_brokers.ListBroker")
    row = w.OneStep.perform_later("exists")
    before = Workflow.objects.filter(pk=row.pk).values().get()
    broker("tests.core_brokers.DownBroker")
    with pytest.raises(EnqueueError, match="the existing workflow is unchanged"):
        w.OneStep.perform_later("exists")
    assert Workflow.objects.filter(pk=row.pk).values().get() == before
