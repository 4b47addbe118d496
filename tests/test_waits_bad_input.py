"""Bad arguments to wait_until / continue_if / durably_repeat fail fast at the call site, name the
step, store nothing and schedule nothing (the repeat names included;
wait's own bad arguments are in test_waits_wait.py)."""

from datetime import datetime, timedelta

import pytest

from chrono_forge import RetryPolicy
from chrono_forge.exceptions import InvalidStepArgument, InvalidStepName
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_waits as ww

pytestmark = pytest.mark.django_db


def fails_fast(chrono_forge_env, workflow_class, args, error, match):
    ww.FLAGS["args"] = args
    with pytest.raises(error, match=match):
        workflow_class.perform_now("bad")
    wf = Workflow.objects.get(key="bad")
    assert wf.state == "stalled"  # a programming error: not retried
    assert wf.execution_logs.count() == 0
    assert chrono_forge_env.pending == []
    assert ErrorLog.objects.filter(workflow=wf).count() == 1
    return wf


@pytest.mark.parametrize(
    "args, match",
    [
        ({"name": "a$b"}, r"durably_repeat name 'a\$b' must not contain '\$'"),
        ({"every": 0}, r"^durably_repeat\$tick: every must be greater than 0"),
        ({"every": -5}, r"^durably_repeat\$tick: every must be greater than 0"),
        ({"every": 0.5}, r"^durably_repeat\$tick: every must be at least 1 second"),
        ({"every": "daily"}, r"^durably_repeat\$tick: every must be a timedelta"),
        ({"on_error": "explode"}, r"^durably_repeat\$tick: on_error must be 'continue' or"),
        ({"till": "missing"}, r"^durably_repeat\$tick till: BadRepeat has no method 'missing'"),
        ({"till": None}, r"^durably_repeat\$tick: till must be a method name"),
        ({"method": "missing"}, r"^durably_repeat\$missing: BadRepeat has no method 'missing'"),
        ({"method": "needs_two"}, r"^durably_repeat\$needs_two: needs_two may take at most one"),
        ({"method": "keyword_only"}, r"^durably_repeat\$keyword_only: keyword_only may take"),
        ({"start_at": datetime(2026, 1, 1)}, r"^durably_repeat\$tick: start_at must be .*aware"),
        ({"timeout": "1h"}, r"^durably_repeat\$tick: timeout must be a timedelta"),
        ({"retry_policy": "3 times"}, r"^durably_repeat\$tick: retry_policy"),
    ],
)
def test_durably_repeat(chrono_forge_env, args, match):
    error = InvalidStepName if "name" in args else InvalidStepArgument
    fails_fast(chrono_forge_env, ww.BadRepeat, args, error, match)


@pytest.mark.parametrize(
    "args, match",
    [
        ({"condition": "missing"}, r"^wait_until\$missing: BadCondition has no method 'missing'"),
        ({"condition": 42}, r"^wait_until: expected a method name or a bound method"),
        ({"name": "x$y"}, r"wait_until name 'x\$y' must not contain"),
        ({"check_interval": 0}, r"^wait_until\$ready: check_interval must be greater than 0"),
        ({"check_interval": -1}, r"^wait_until\$ready: check_interval must be greater than 0"),
        ({"timeout": "soon"}, r"^wait_until\$ready: timeout must be a timedelta"),
        ({"retry_policy": 5}, r"^wait_until\$ready: retry_policy"),
        ({"kind": "continue_if", "condition": "missing"}, r"^continue_if\$missing: BadCondition"),
        ({"kind": "continue_if", "name": "g$1"}, r"continue_if name 'g\$1' must not contain"),
        ({"kind": "continue_if", "condition": "ready", "name": ""}, r"must be a non-empty string"),
    ],
)
def test_conditions(chrono_forge_env, args, match):
    error = InvalidStepName if "name" in args else InvalidStepArgument
    fails_fast(chrono_forge_env, ww.BadCondition, args, error, match)


def test_custom_name_is_used_in_the_message(chrono_forge_env):
    fails_fast(
        chrono_forge_env,
        ww.BadCondition,
        {"condition": "missing", "name": "payment"},
        InvalidStepArgument,
        r"^wait_until\$payment: BadCondition has no method 'missing'",
    )


def test_bad_input_errors_are_value_and_type_errors():
    # the issue asks for "clear ValueError/TypeError": both families catch them
    assert issubclass(InvalidStepArgument, ValueError) and issubclass(
        InvalidStepArgument, TypeError
    )
    assert issubclass(InvalidStepName, ValueError)


@pytest.mark.parametrize(
    "args",
    [
        {"name": "valid_name"},
        {"every": timedelta(days=1), "start_at": datetime(2026, 1, 1).astimezone()},
        {"timeout": -1, "retry_policy": [RetryPolicy(max_attempts=2)]},
    ],
)
def test_valid_arguments_pass(chrono_forge_env, args):
    # 224: a valid name (and other valid shapes) raise nothing; the repeat is scheduled
    ww.FLAGS["args"] = args
    ww.BadRepeat.perform_now("ok")
    wf = Workflow.objects.get(key="ok")
    assert wf.state == "idle" and wf.next_run_at is not None
    assert ErrorLog.objects.count() == 0
