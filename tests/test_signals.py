"""chrono_forge.signals: each transition sends its signal once, after the transaction that recorded
it committed; nothing is sent for a transition that rolled back; a raising receiver is logged and
never breaks the pass; a receiver adds no database statement to the pass."""

from __future__ import annotations

import logging

import pytest
from django.db import connection, transaction

from chrono_forge import signals
from chrono_forge.models import Workflow
from tests import workflows_signals as ws
from tests.core_sql import SqlLog

transactional = pytest.mark.django_db(transaction=True)

ALL = [
    "workflow_started",
    "workflow_completed",
    "workflow_failed",
    "workflow_stalled",
    "workflow_cancelled",
    "step_failed",
    "step_retry_scheduled",
]


class Recorder:
    """Connects to every signal; records what each receiver saw, including what was committed."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def __enter__(self):
        for name in ALL:
            getattr(signals, name).connect(self.receiver(name), weak=False, dispatch_uid=name)
        return self

    def __exit__(self, *exc):
        for name in ALL:
            getattr(signals, name).disconnect(dispatch_uid=name)

    def receiver(self, name):
        def receive(sender, **kwargs):
            workflow = kwargs["workflow"]
            stored = Workflow.objects.filter(pk=workflow.pk).values_list("state", flat=True)
            self.events.append(
                (
                    name,
                    dict(
                        kwargs,
                        sender=sender,
                        in_atomic=connection.in_atomic_block,
                        stored_state=stored.first(),
                    ),
                )
            )

        return receive

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def only(self, name: str) -> dict:
        found = [event for event_name, event in self.events if event_name == name]
        assert len(found) == 1, self.names()
        return found[0]


@pytest.fixture
def recorder():
    with Recorder() as recorder:
        yield recorder


@transactional
def test_started_and_completed_once_over_several_passes(chrono_forge_env, recorder):
    wf = ws.TwoSteps.perform_later("two", wait=60)
    assert recorder.names() == []  # enqueued, not started
    assert chrono_forge_env.run_all() >= 2
    assert recorder.names() == ["workflow_started", "workflow_completed"]
    started = recorder.only("workflow_started")
    assert started["sender"] is ws.TwoSteps
    assert started["workflow"].pk == wf.pk
    assert started["workflow"].started_at is not None
    # Sent after the commit: outside any transaction, the lock is in the database.
    assert started["in_atomic"] is False and started["stored_state"] == "running"
    completed = recorder.only("workflow_completed")
    assert completed["in_atomic"] is False and completed["stored_state"] == "completed"
    assert completed["workflow"].state == "completed"


@transactional
def test_a_retried_then_failed_step_stalls_the_run(chrono_forge_env, recorder):
    wf = ws.FailingStep.perform_later("stall")
    chrono_forge_env.run_all()
    assert recorder.names() == [
        "workflow_started",
        "step_retry_scheduled",
        "step_failed",
        "workflow_stalled",
    ]
    retry = recorder.only("step_retry_scheduled")
    assert retry["step_name"] == "durably_execute$boom"
    assert isinstance(retry["error"], ws.Fails) and retry["attempt"] == 1
    assert retry["retry_at"] is not None and retry["in_atomic"] is False
    failed = recorder.only("step_failed")
    assert (failed["step_name"], failed["attempt"]) == ("durably_execute$boom", 2)
    assert isinstance(failed["error"], ws.Fails)
    stalled = recorder.only("workflow_stalled")
    assert stalled["workflow"].pk == wf.pk and stalled["stored_state"] == "stalled"
    assert stalled["step_name"] == "durably_execute$boom"
    assert "the step failed" in str(stalled["error"])
    # An operator retry is a new run of the same transitions: sent again, once each.
    recorder.events.clear()
    ws.FailingStep.retry_now("stall")
    assert recorder.names() == ["step_retry_scheduled"]
    chrono_forge_env.run_all()
    assert recorder.names() == ["step_retry_scheduled", "step_failed", "workflow_stalled"]


@transactional
def test_a_flaky_step_sends_one_retry_and_completes(chrono_forge_env, recorder):
    ws.FlakyStep.perform_later("flaky")
    chrono_forge_env.run_all()
    assert recorder.names() == ["workflow_started", "step_retry_scheduled", "workflow_completed"]


@transactional
def test_a_workflow_level_error_fails_the_run(chrono_forge_env, recorder):
    ws.FailingWorkflow.perform_later("fail")
    chrono_forge_env.run_all()
    assert recorder.names() == ["workflow_started", "workflow_failed"]
    failed = recorder.only("workflow_failed")
    assert isinstance(failed["error"], ws.Fails) and failed["stored_state"] == "failed"


@transactional
def test_inside_an_application_transaction_signals_wait_for_its_commit(recorder):
    with transaction.atomic():
        ws.TwoSteps.perform_now("inline")
        assert recorder.names() == []  # not committed yet
    assert recorder.names() == ["workflow_started", "workflow_completed"]
    assert recorder.only("workflow_completed")["in_atomic"] is False


@transactional
def test_nothing_is_sent_for_a_rolled_back_transition(recorder):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        with transaction.atomic():
            ws.TwoSteps.perform_now("rolled-back")
            raise Rollback
    assert recorder.names() == []
    assert not Workflow.objects.filter(key="rolled-back").exists()


@transactional
def test_a_raising_receiver_is_logged_and_never_breaks_the_pass(chrono_forge_env, recorder, caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.workflow_completed.connect(broken, weak=False, dispatch_uid="broken")
    try:
        with caplog.at_level(logging.ERROR, logger="chrono_forge"):
            wf = ws.TwoSteps.perform_later("broken-receiver")
            chrono_forge_env.run_all()
    finally:
        signals.workflow_completed.disconnect(dispatch_uid="broken")
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert "workflow_completed" in recorder.names()  # the other receiver still ran
    messages = [r.getMessage() for r in caplog.records if r.name == "chrono_forge"]
    assert any("workflow_completed" in m and "receiver bug" in m for m in messages), messages
    assert chrono_forge_env.pending == []


@transactional
def test_receivers_add_no_statement_to_a_pass(chrono_forge_env):
    seen: list[str] = []

    def quiet(sender, signal, **kwargs):  # no database access of its own
        seen.append(signals.NAMES[signal])

    def pass_statements(key: str) -> int:
        ws.TwoSteps.perform_later(key)
        with SqlLog() as log:
            chrono_forge_env.run_all()
        return len(log.data_statements)

    bare = pass_statements("bare")
    for name in ALL:
        getattr(signals, name).connect(quiet, weak=False, dispatch_uid=f"quiet-{name}")
    try:
        observed = pass_statements("observed")
    finally:
        for name in ALL:
            getattr(signals, name).disconnect(dispatch_uid=f"quiet-{name}")
    assert seen == ["workflow_started", "workflow_completed"]
    assert observed == bare


def test_every_signal_is_a_django_signal():
    from django.dispatch import Signal

    assert all(isinstance(getattr(signals, name), Signal) for name in ALL)
