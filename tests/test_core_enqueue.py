"""The enqueue contract and bad input: bad input raises before anything
is stored or enqueued; perform_later inside atomic() enqueues on commit."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import transaction
from django.test import override_settings
from django_q.models import OrmQ

from chrono_forge.exceptions import InvalidStepResult
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_core as w

pytestmark = pytest.mark.django_db

ENQUEUERS = ["perform_later", "perform_now"]


def assert_nothing_stored_or_enqueued(env):
    assert Workflow.objects.count() == 0
    assert env.pending == []
    assert w.FLAGS.get("received") is None


# -- reserved kwargs and the contract --------------------------------------------------------------
@pytest.mark.parametrize("how", ENQUEUERS)
@pytest.mark.parametrize("reserved", ["attempt", "retry_counts", "retry_workflow"])
def test_reserved_kwargs_are_rejected(chrono_forge_env, how, reserved):
    with pytest.raises(ValueError, match=rf"'{reserved}'.*reserved"):
        getattr(w.EchoKwargs, how)("k", **{reserved: 1})
    assert_nothing_stored_or_enqueued(chrono_forge_env)


@pytest.mark.parametrize("how", ENQUEUERS)
def test_positional_extras_are_rejected(chrono_forge_env, how):
    with pytest.raises(TypeError, match="keyword"):
        getattr(w.EchoKwargs, how)("k", 99)
    assert_nothing_stored_or_enqueued(chrono_forge_env)


@pytest.mark.parametrize("how", ENQUEUERS)
@pytest.mark.parametrize(
    "key,error",
    [
        (123, TypeError),
        (None, TypeError),
        (b"k", TypeError),
        (["k"], TypeError),
        ("", ValueError),
        ("a$b", ValueError),
        ("k" * 256, ValueError),
        ("a\x00b", ValueError),
    ],
)
def test_bad_keys_are_rejected(chrono_forge_env, how, key, error):
    with pytest.raises(error):
        getattr(w.EchoKwargs, how)(key)
    assert_nothing_stored_or_enqueued(chrono_forge_env)


def test_a_255_character_key_is_accepted(chrono_forge_env):
    wf = w.EchoKwargs.perform_later("k" * 255)
    assert Workflow.objects.get(pk=wf.pk).key == "k" * 255


@pytest.mark.parametrize("how", ENQUEUERS)
@pytest.mark.parametrize(
    "value,error",
    [
        (object(), TypeError),
        (datetime(2026, 1, 1), TypeError),
        ({1, 2}, TypeError),
        (b"x", TypeError),
        (float("nan"), ValueError),
        ("nul\x00", ValueError),
        ({"nested": ["nul\x00"]}, ValueError),
        ({"key\x00": 1}, ValueError),
    ],
)
def test_non_json_kwargs_are_rejected(chrono_forge_env, how, value, error):
    """A type JSON cannot hold is a TypeError; a value a database would reject or alter (NaN, a
    NUL character: PostgreSQL's jsonb rejects it, SQLite would not) is a ValueError."""
    with pytest.raises(error, match="JSON"):
        getattr(w.EchoKwargs, how)("k", foo=value)
    assert_nothing_stored_or_enqueued(chrono_forge_env)


@pytest.mark.parametrize("options", ["plan", ["a"], {"when": datetime(2026, 1, 1)}])
def test_bad_options_are_rejected(chrono_forge_env, options):
    with pytest.raises(TypeError):
        w.EchoKwargs.perform_later("k", options=options)
    assert_nothing_stored_or_enqueued(chrono_forge_env)


def test_options_and_kwargs_pass_through(chrono_forge_env):
    wf = w.EchoKwargs.perform_later("k", options={"plan": "pro"}, foo="bar")
    assert (wf.options, wf.kwargs) == ({"plan": "pro"}, {"foo": "bar"})
    chrono_forge_env.run_all()
    assert w.FLAGS["received"] == {"foo": "bar", "n": None}


def test_an_existing_key_keeps_its_kwargs_and_never_duplicates_the_row(chrono_forge_env):
    first = w.EchoKwargs.perform_later("k", foo="first")
    again = w.EchoKwargs.perform_later("k", foo="second")
    assert again.pk == first.pk and Workflow.objects.count() == 1
    assert Workflow.objects.get().kwargs == {"foo": "first"}
    assert len(chrono_forge_env.pending) == 2


def test_the_same_key_in_two_classes_is_two_workflows(chrono_forge_env):
    w.EchoKwargs.perform_later("shared")
    w.NoSteps.perform_later("shared")
    assert Workflow.objects.count() == 2


@pytest.mark.parametrize("how", ["retry_now", "retry_later"])
def test_retry_rejects_reserved_and_extra_kwargs(chrono_forge_env, how):
    wf = w.FailsOnce.perform_later("k")
    chrono_forge_env.run_all()
    assert Workflow.objects.get(pk=wf.pk).state == "failed"
    with pytest.raises(ValueError, match="reserved"):
        getattr(w.FailsOnce, how)("k", retry_workflow=True)
    with pytest.raises(TypeError):
        getattr(w.FailsOnce, how)("k", foo=1)
    with pytest.raises(TypeError):
        getattr(w.FailsOnce, how)("k", 1)
    assert chrono_forge_env.pending == [] and Workflow.objects.get(pk=wf.pk).state == "failed"
    getattr(w.FailsOnce, how)("k")  # the internal path passes retry_workflow=True itself
    chrono_forge_env.run_all()
    assert w.calls("FailsOnce.perform") == 2


def test_a_workflow_class_defined_in_a_function_is_refused(chrono_forge_env):
    from chrono_forge import DurableWorkflow

    class Local(DurableWorkflow):
        def perform(self):
            pass

    with pytest.raises(TypeError, match="module level"):
        Local.perform_later("k")
    assert_nothing_stored_or_enqueued(chrono_forge_env)


# -- step results ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "result",
    [object(), {1, 2}, datetime(2026, 1, 1), float("inf"), {"x": b"bytes"}, "nul\x00", ["nul\x00"]],
)
def test_a_non_json_step_result_fails_the_step_and_stalls(chrono_forge_env, result):
    w.FLAGS["result"] = result
    with pytest.raises(InvalidStepResult, match="JSON"):
        w.BadResult.perform_now("bad")
    wf = Workflow.objects.get(key="bad")
    step = wf.execution_logs.get(step_name="durably_execute$produce")
    assert (wf.state, step.state, step.result) == ("stalled", "failed", None)
    assert step.error_class == "chrono_forge.exceptions.InvalidStepResult"
    assert ErrorLog.objects.filter(workflow=wf, error_class=step.error_class).count() == 1
    assert w.calls("BadResult.produce") == 1 and chrono_forge_env.pending == []


def test_an_oversized_step_result_fails_the_step(chrono_forge_env):
    w.FLAGS["result"] = "x" * 101
    with override_settings(CHRONO_FORGE={"RESULT_MAX_BYTES": 100}):
        with pytest.raises(InvalidStepResult, match="RESULT_MAX_BYTES"):
            w.BadResult.perform_now("big")
    step = ExecutionLog.objects.get(workflow__key="big", step_name="durably_execute$produce")
    assert (step.state, step.result) == ("failed", None)


def test_a_result_is_stored_and_returned_unchanged(chrono_forge_env):
    w.FLAGS["result"] = {"1": ["x" * 10]}
    wf = w.BadResult.perform_now("ok")
    assert wf.state == "completed"
    step = ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$produce")
    assert step.result == {"1": ["x" * 10]}


def test_an_escaped_backslash_u0000_text_is_not_a_nul_and_round_trips(chrono_forge_env):
    text = "literal \\u0000 and \\\\u0000"  # backslash-u-0-0-0-0, not a NUL character
    w.FLAGS["result"] = {"text": text}
    wf = w.EchoKwargs.perform_now("esc", foo=text)
    assert Workflow.objects.get(pk=wf.pk).kwargs == {"foo": text}
    wf = w.BadResult.perform_now("esc-result")
    assert ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$produce").result == {
        "text": text
    }


def test_the_default_result_limit_is_64_kb(chrono_forge_env):
    w.FLAGS["result"] = "x" * (64 * 1024 + 1)
    with pytest.raises(InvalidStepResult):
        w.BadResult.perform_now("default")


# -- perform_later inside atomic() -----------------------------------------------------------------
class Rollback(Exception):
    pass


def test_rolled_back_perform_later_leaves_no_row_and_no_run(chrono_forge_env):
    with pytest.raises(Rollback):
        with transaction.atomic():
            w.NoSteps.perform_later("rolled")
            assert len(chrono_forge_env.pending) == 0  # not visible before the commit
            raise Rollback()
    assert Workflow.objects.count() == 0 and chrono_forge_env.pending == []
    assert chrono_forge_env.run_all() == 0


def test_committed_perform_later_in_the_test_transaction_enqueues_one_run(chrono_forge_env):
    with transaction.atomic():
        w.NoSteps.perform_later("committed")
        assert chrono_forge_env.pending == []
    assert len(chrono_forge_env.pending) == 1
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="committed").state == "completed"


@pytest.mark.django_db(transaction=True)
def test_committed_perform_later_with_a_real_commit(chrono_forge_env):
    with transaction.atomic():
        w.NoSteps.perform_later("real")
    assert len(chrono_forge_env.pending) == 1
    with pytest.raises(Rollback):
        with transaction.atomic():
            w.NoSteps.perform_later("gone")
            raise Rollback()
    assert list(Workflow.objects.values_list("key", flat=True)) == ["real"]
    assert [run.key for run in chrono_forge_env.pending] == ["real"]
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="real").state == "completed"


@pytest.mark.django_db(transaction=True)
def test_the_django_q_broker_row_follows_the_users_transaction():
    """The real dispatcher (ORM broker on the same database): the queue row commits or rolls back
    with the workflow row."""
    with pytest.raises(Rollback):
        with transaction.atomic():
            w.NoSteps.perform_later("q-rolled")
            raise Rollback()
    assert Workflow.objects.count() == 0 and OrmQ.objects.count() == 0
    with transaction.atomic():
        w.NoSteps.perform_later("q-committed")
    assert Workflow.objects.count() == 1 and OrmQ.objects.count() == 1
