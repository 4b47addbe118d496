"""wait (durable sleep)."""

from datetime import datetime, timedelta

import pytest

from chrono_forge.exceptions import InvalidStepArgument, InvalidStepName
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_waits as ww
from tests.core_sql import capture, statements
from tests.waits_support import attempt_updates, log, refresh

pytestmark = pytest.mark.django_db


def test_first_pass_records_the_deadline_and_halts_until_it(chrono_forge_env):
    # 46: log wait$<name>, metadata.wait_until = first run + duration, persisted pending before
    # halting.
    start = chrono_forge_env.now
    wf = ww.WaitThenStep.perform_later("w", seconds=3600)
    with capture() as queries:
        chrono_forge_env.run_due()
    entry = log(wf, "wait$cool_down")
    assert entry.state == "pending" and entry.attempts == 1
    assert datetime.fromisoformat(entry.metadata["wait_until"]) == start + timedelta(hours=1)
    assert entry.metadata == {"wait_until": (start + timedelta(hours=1)).isoformat()}
    # The first attempt rides on the INSERT: one INSERT, no attempt UPDATE.
    assert len(statements(queries, "INSERT")) == 1 and attempt_updates(queries) == []
    wf = refresh(wf)
    assert wf.state == "idle" and wf.next_run_at == start + timedelta(hours=1)
    assert [(run.key, run.run_at) for run in chrono_forge_env.pending] == [
        ("w", start + timedelta(hours=1))
    ]
    assert ww.CALLS.get("WaitThenStep.after") is None


def test_early_pass_bumps_attempts_and_reschedules_for_the_time_remaining(chrono_forge_env):
    # 46 (port: reschedule at wait_until, not the full duration again) and 47 (the deadline never
    # moves).
    start = chrono_forge_env.now
    wf = ww.WaitThenStep.perform_later("w", seconds=3600)
    chrono_forge_env.run_due()
    chrono_forge_env.advance(timedelta(minutes=40))
    chrono_forge_env.drop_pending()
    ww.WaitThenStep.perform_later("w")  # an early wake-up (resume, duplicate delivery)
    chrono_forge_env.run_due()
    entry = log(wf, "wait$cool_down")
    assert entry.state == "pending" and entry.attempts == 2
    assert entry.metadata["wait_until"] == (start + timedelta(hours=1)).isoformat()
    assert [run.run_at for run in chrono_forge_env.pending] == [start + timedelta(hours=1)]
    assert refresh(wf).next_run_at == start + timedelta(hours=1)
    assert ww.CALLS.get("WaitThenStep.after") is None


def test_pass_at_the_deadline_completes_and_continues(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ww.WaitThenStep.perform_later("w", seconds=3600)
    assert chrono_forge_env.run_all() == 2
    assert chrono_forge_env.now == start + timedelta(hours=1)
    entry = log(wf, "wait$cool_down")
    assert entry.state == "completed" and entry.attempts == 2
    assert entry.completed_at == start + timedelta(hours=1)
    wf = refresh(wf)
    assert wf.state == "completed" and wf.next_run_at is None
    assert ww.CALLS["WaitThenStep.after"] == 1


def test_replays_never_extend_the_deadline(chrono_forge_env):
    # 47: many early passes, each one replaying the wait from the top; the deadline stays put.
    start = chrono_forge_env.now
    wf = ww.WaitThenStep.perform_later("w", seconds=600)
    chrono_forge_env.run_due()
    for _ in range(5):
        chrono_forge_env.advance(timedelta(minutes=1))
        ww.WaitThenStep.perform_later("w")
        chrono_forge_env.run_due()
    assert (
        log(wf, "wait$cool_down").metadata["wait_until"]
        == (start + timedelta(minutes=10)).isoformat()
    )
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    assert refresh(wf).completed_at == start + timedelta(minutes=10)


def test_a_completed_wait_is_not_waited_again(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ww.TwoWaits.perform_later("w")
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    assert chrono_forge_env.now == start + timedelta(minutes=15)
    first, second = log(wf, "wait$first"), log(wf, "wait$second")
    assert first.metadata["wait_until"] == (start + timedelta(minutes=10)).isoformat()
    assert second.metadata["wait_until"] == (start + timedelta(minutes=15)).isoformat()


def test_zero_wait_is_a_checkpoint(chrono_forge_env):
    wf = ww.WaitThenStep.perform_later("w", seconds=0)
    assert chrono_forge_env.run_all() == 1
    entry = log(wf, "wait$cool_down")
    assert entry.state == "completed" and entry.attempts == 1
    assert refresh(wf).state == "completed"


def test_dollar_in_name_raises_invalid_step_name_and_is_not_retried(chrono_forge_env):
    # wait(..., "cool$down") -> InvalidStepName through perform_now, not retried.
    ww.FLAGS["args"] = {"name": "cool$down"}
    with pytest.raises(InvalidStepName, match=r"cool\$down"):
        ww.BadWait.perform_now("w")
    wf = Workflow.objects.get(key="w")
    assert wf.state == "stalled"
    assert wf.execution_logs.count() == 0
    assert chrono_forge_env.pending == []
    assert list(ErrorLog.objects.values_list("error_class", flat=True)) == [
        "chrono_forge.exceptions.InvalidStepName"
    ]


@pytest.mark.parametrize("duration", [-1, timedelta(seconds=-5), "10", True, None, float("nan")])
def test_bad_durations_raise_at_the_call_site_naming_the_step(chrono_forge_env, duration):
    ww.FLAGS["args"] = {"duration": duration}
    with pytest.raises(InvalidStepArgument, match=r"^wait\$ok: duration"):
        ww.BadWait.perform_now("w")
    wf = Workflow.objects.get(key="w")
    assert wf.state == "stalled" and wf.execution_logs.count() == 0
    assert chrono_forge_env.pending == []


def test_continuation_is_published_after_the_lock_is_released(chrono_forge_env, monkeypatch):
    # 49: when the wait's continuation is enqueued, the row is already unlocked in the database.
    seen = []
    enqueue = chrono_forge_env.dispatcher.enqueue_call

    def spy(func, *args, run_at=None, **kwargs):
        if args and args[1] == "w" and run_at is not None and run_at > chrono_forge_env.now:
            seen.append(Workflow.objects.filter(key="w").values_list("locked_by", "state").get())
        return enqueue(func, *args, run_at=run_at, **kwargs)

    monkeypatch.setattr(chrono_forge_env.dispatcher, "enqueue_call", spy)
    ww.WaitThenStep.perform_later("w", seconds=3600)
    chrono_forge_env.run_due()
    assert seen == [(None, "idle")]
