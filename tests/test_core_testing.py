"""The users' test toolkit, chrono_forge.testing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils.timezone import now as django_now

from chrono_forge import clock, dispatch
from chrono_forge.dispatch.memory import InMemoryDispatcher
from chrono_forge.exceptions import InvalidStepName
from chrono_forge.models import Workflow
from chrono_forge.testing import workflow_env
from tests import workflows_core as w

pytestmark = pytest.mark.django_db

START = datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_the_clock_is_frozen_and_moves_only_when_told():
    with workflow_env(start=START) as env:
        assert clock.now() == env.now == START
        assert env.advance(timedelta(minutes=5)) == START + timedelta(minutes=5) == clock.now()
        assert env.advance(30) == START + timedelta(minutes=5, seconds=30)
        env.travel_to(START)
        assert clock.now() == START


def test_run_due_runs_only_what_is_due_and_run_all_jumps_the_clock():
    with workflow_env(start=START) as env:
        w.FlakyOnce.perform_later("due")
        assert env.run_due() == 1  # the first pass; the retry is due in 1 s
        [retry] = env.pending
        assert tuple(retry) == (w.FlakyOnce.job_class(), "due", START + timedelta(seconds=1))
        assert env.run_due() == 0 and env.now == START
        assert env.run_all() == 1 and env.now == START + timedelta(seconds=1)
        assert env.pending == [] and Workflow.objects.get(key="due").state == "completed"


def test_pending_is_ordered_by_due_time_then_enqueue_order():
    with workflow_env(start=START) as env:
        dispatch.enqueue("a.B", "late", run_at=START + timedelta(seconds=9))
        dispatch.enqueue("a.B", "first")
        dispatch.enqueue("a.B", "second")
        assert [run.key for run in env.pending] == ["first", "second", "late"]
        assert env.drop_pending() == 3 and env.pending == []


def test_run_all_is_guarded_against_endless_rescheduling():
    with workflow_env(start=START, max_runs=5) as env:
        w.Steps.perform_later("forever", n=0, gate=True)  # the gate retries every 60 s, unbounded
        with pytest.raises(RuntimeError, match="more than 5"):
            env.run_all()
        assert w.calls("Steps.gate") == 5


def test_programming_errors_propagate_out_of_run_due():
    with workflow_env(start=START) as env:
        w.NamedStep.perform_later("bad", name="a$b")
        with pytest.raises(InvalidStepName):
            env.run_due()
        assert Workflow.objects.get(key="bad").state == "stalled"


def test_the_env_restores_dispatcher_and_clock_on_exit():
    before = dispatch.get_dispatcher()
    with pytest.raises(ZeroDivisionError):
        with workflow_env(start=START):
            assert isinstance(dispatch.get_dispatcher(), InMemoryDispatcher)
            raise ZeroDivisionError("a failing test body")
    assert dispatch.get_dispatcher() is before
    assert abs(clock.now() - django_now()) < timedelta(minutes=1)  # the real clock again


def test_the_pytest_fixture_is_a_workflow_env(chrono_forge_env):
    w.NoSteps.perform_later("fixture")
    assert chrono_forge_env.run_all() == 1
    assert clock.now() == chrono_forge_env.now
