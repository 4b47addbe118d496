"""Programming errors at a primitive's call site stall the workflow at once: one ErrorLog, state
``stalled``, a message saying what to change, nothing scheduled. They are never retried as if
they were transient (no workflow-level backoff)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from chrono_forge import RetryPolicy
from chrono_forge.exceptions import (
    ChronoForgeError,
    DuplicateStepName,
    InvalidStepArgument,
    NotExecutableError,
)
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_api as a

pytestmark = pytest.mark.django_db

NOT_A_POLICY = ["3 attempts", 3, RetryPolicy, [RetryPolicy(), "x"], [], {"max_attempts": 2}]
BAD_DURATIONS = [
    math.nan,
    math.inf,
    -math.inf,
    1e12,
    10**20,
    timedelta.max,
    timedelta(days=-(10**8)),
    "5 minutes",
    None,
    True,
]

CALLS = {
    "durably_execute retry_policy": lambda bad: (
        lambda wf: wf.durably_execute(wf.step, retry_policy=bad)
    ),
    "durably_repeat retry_policy": lambda bad: (
        lambda wf: wf.durably_repeat(wf.step, every=60, till=wf.ready, retry_policy=bad)
    ),
    "wait_until retry_policy": lambda bad: lambda wf: wf.wait_until(wf.never, retry_policy=bad),
}
DURATION_CALLS = {
    "wait": lambda bad: lambda wf: wf.wait(bad, "pause"),
    "wait_until timeout": lambda bad: lambda wf: wf.wait_until(wf.never, timeout=bad),
    "wait_until check_interval": lambda bad: lambda wf: wf.wait_until(wf.never, check_interval=bad),
    "durably_repeat every": lambda bad: (
        lambda wf: wf.durably_repeat(wf.step, every=bad, till=wf.ready)
    ),
    "durably_repeat timeout": lambda bad: (
        lambda wf: wf.durably_repeat(wf.step, every=60, till=wf.never, timeout=bad)
    ),
    "merge_branches min_interval": lambda bad: (
        lambda wf: (
            wf.branch("b", lambda: None),
            wf.merge_branches("b", min_interval=bad),
        )
    ),
    "merge_branches max_interval": lambda bad: (
        lambda wf: (
            wf.branch("b", lambda: None),
            wf.merge_branches("b", max_interval=bad),
        )
    ),
}


def assert_stalled_once(env, error_class: type, match: str) -> Workflow:
    wf = Workflow.objects.get(key="k")
    assert wf.state == "stalled" and wf.next_run_at is None and env.pending == []
    errors = list(ErrorLog.objects.filter(workflow=wf))
    assert len(errors) == 1, [e.error_message for e in errors]
    assert errors[0].error_class == f"{error_class.__module__}.{error_class.__qualname__}"
    assert match in errors[0].error_message
    assert a.CALLS["CallSite.perform"] == 1  # never retried
    return wf


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("bad", NOT_A_POLICY, ids=repr)
def test_a_wrong_type_per_call_retry_policy_stalls_at_once(chrono_forge_env, call, bad):
    a.FLAGS["call"] = CALLS[call](bad)
    with pytest.raises(InvalidStepArgument, match="retry_policy"):
        a.CallSite.perform_now("k")
    chrono_forge_env.run_all()
    assert_stalled_once(chrono_forge_env, InvalidStepArgument, "retry_policy")
    assert "CallSite.step" not in a.CALLS


@pytest.mark.parametrize("call", sorted(DURATION_CALLS))
@pytest.mark.parametrize("bad", BAD_DURATIONS, ids=repr)
def test_a_bad_duration_stalls_at_once(chrono_forge_env, call, bad):
    what = call.split()[-1] if " " in call else "duration"
    a.FLAGS["call"] = DURATION_CALLS[call](bad)
    with pytest.raises(InvalidStepArgument, match=what):
        a.CallSite.perform_now("k")
    chrono_forge_env.run_all()
    assert_stalled_once(chrono_forge_env, InvalidStepArgument, what)


def test_a_bad_duration_error_says_what_is_accepted(chrono_forge_env):
    a.FLAGS["call"] = lambda wf: wf.wait(1e12, "pause")
    with pytest.raises(InvalidStepArgument, match=r"wait\$pause: duration .*at most 36500 days"):
        a.CallSite.perform_now("k")


def test_the_longest_accepted_wait_is_scheduled(chrono_forge_env):
    a.FLAGS["call"] = lambda wf: wf.wait(timedelta(days=36500), "pause")
    wf = a.CallSite.perform_now("k")
    assert wf.state == "idle" and wf.next_run_at is not None


# -- duplicate step names --------------------------------------------------------------------------
DUPLICATES = {
    "durably_execute": lambda wf: (wf.durably_execute(wf.step), wf.durably_execute(wf.step)),
    "durably_execute by name": lambda wf: (
        wf.durably_execute(wf.step, name="same"),
        wf.durably_execute(wf.other, name="same"),
    ),
    "wait": lambda wf: (wf.wait(0, "pause"), wf.wait(0, "pause")),
    "continue_if": lambda wf: (wf.continue_if(wf.ready), wf.continue_if(wf.ready)),
    "wait_until": lambda wf: (wf.wait_until(wf.ready), wf.wait_until(wf.ready)),
    "branch": lambda wf: (
        wf.branch("b", lambda: None, automerge=True),
        wf.branch("b", lambda: None, automerge=True),
    ),
    "merge_branches": lambda wf: (
        wf.branch("b", lambda: None),
        wf.merge_branches("b"),
        wf.merge_branches("b"),
    ),
}


@pytest.mark.parametrize("call", sorted(DUPLICATES))
def test_a_step_name_used_twice_in_one_pass_stalls_naming_both_call_sites(chrono_forge_env, call):
    a.FLAGS["call"] = DUPLICATES[call]
    with pytest.raises(DuplicateStepName) as excinfo:
        a.CallSite.perform_now("k")
    message = str(excinfo.value)
    # both call sites: the same lambda line here, so the file:line appears twice
    assert message.count(f"{__file__}:") == 2, message
    assert "name=" in message
    wf = assert_stalled_once(chrono_forge_env, DuplicateStepName, "used twice")
    if call.startswith("durably_execute"):
        # the first call ran its body once; the second never silently returned its result
        assert a.CALLS.get("CallSite.step", 0) + a.CALLS.get("CallSite.other", 0) == 1
    assert wf.state == "stalled"


def test_duplicate_step_name_is_a_public_programming_error():
    assert issubclass(DuplicateStepName, NotExecutableError)
    assert issubclass(DuplicateStepName, ChronoForgeError)
    assert issubclass(DuplicateStepName, ValueError)
    import chrono_forge.exceptions as exceptions

    assert "DuplicateStepName" in exceptions.__all__


def test_distinct_names_and_replays_are_not_duplicates(chrono_forge_env):
    def twice(wf):
        wf.durably_execute(wf.step, name="first")
        wf.durably_execute(wf.step, name="second")
        wf.wait(60, "pause")  # the next pass replays both steps: no duplicate
        wf.durably_execute(wf.other)

    a.FLAGS["call"] = twice
    a.CallSite.perform_later("k")
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="k").state == "completed"
    assert a.CALLS == {"CallSite.perform": 2, "CallSite.step": 2, "CallSite.other": 1}


def test_a_fixed_duplicate_completes_after_a_retry(chrono_forge_env):
    def buggy(wf):
        wf.durably_execute(wf.step)
        wf.durably_execute(wf.step, name=a.FLAGS.get("fixed_name", "step"))

    a.FLAGS["call"] = buggy
    with pytest.raises(DuplicateStepName):
        a.CallSite.perform_now("k")
    a.FLAGS["fixed_name"] = "step_again"
    a.CallSite.retry_now("k")
    wf = Workflow.objects.get(key="k")
    assert wf.state == "completed" and a.CALLS["CallSite.step"] == 2


# -- spawn of something that is not a workflow class -----------------------------------------------
@pytest.mark.parametrize(
    "child",
    [str, "tests.workflows_api.Strict", None, a.Strict(), RetryPolicy, a.Nasty],
    ids=repr,
)
def test_spawning_a_non_workflow_class_stalls_at_once(chrono_forge_env, child):
    a.FLAGS.update(child=child, child_kwargs={})
    with pytest.raises(InvalidStepArgument, match="expected a DurableWorkflow subclass"):
        a.SpawnsChild.perform_now("k")
    wf = Workflow.objects.get(key="k")
    assert wf.state == "stalled" and chrono_forge_env.pending == []
    assert ErrorLog.objects.filter(workflow=wf).count() == 1
    assert Workflow.objects.count() == 1
