"""Property-based tests of the boundary validators (Hypothesis): random JSON-ish values, keys,
step names, durations and policies either round-trip unchanged (through the validator and the
database) or raise TypeError/ValueError, never another exception and never a stored alteration.

Example counts are kept modest (the ``chrono_forge`` profile) so the suite stays fast; set
``HYPOTHESIS_PROFILE=thorough`` for a longer run.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrono_forge import RetryPolicy
from chrono_forge.context import Context
from chrono_forge.errors import storable_text
from chrono_forge.exceptions import ContextValidationError, InvalidStepArgument
from chrono_forge.models import Workflow
from chrono_forge.retry import coerce
from chrono_forge.steps import duration_arg
from chrono_forge.validation import to_json
from tests import workflows_api as a

settings.register_profile(
    "chrono_forge",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chrono_forge"))

CLEAR = (TypeError, ValueError)

# Any text, lone surrogates and NUL included (they must be refused, never stored altered).
text = st.text(st.characters(codec=None), max_size=20) | st.sampled_from(
    ["", "\x00", "a\ud800b", "\udfff", "$", "é€😀", "\\u0000"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
keys = text | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
json_ish = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(keys, children, max_size=4)
        | st.frozensets(st.integers(), max_size=2)
    ),
    max_leaves=12,
)


def same(x: Any, y: Any) -> bool:
    """Equality that also sees types and the sign of zero (``1 == 1.0 == True`` is not enough)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return x == y and math.copysign(1, x) == math.copysign(1, y)
    if isinstance(x, list):
        return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y, strict=True))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    return x == y


# -- values ----------------------------------------------------------------------------------------
@given(json_ish)
def test_to_json_returns_an_unchanged_copy_or_a_clear_error(value):
    try:
        stored = to_json(value, "value", max_bytes=64 * 1024)
    except CLEAR:
        return
    assert same(stored, value)


@pytest.mark.django_db
@given(value=json_ish)
def test_kwargs_round_trip_through_the_database_or_nothing_is_stored(chrono_forge_env, value):
    Workflow.objects.all().delete()
    chrono_forge_env.drop_pending()
    try:
        row = a.Loose.perform_later("k", value=value, options={"o": value})
    except CLEAR:
        assert Workflow.objects.count() == 0 and chrono_forge_env.pending == []
        return
    stored = Workflow.objects.get(pk=row.pk)
    assert same(stored.kwargs, {"value": value}) and same(stored.options, {"o": value})


@given(key=keys, value=json_ish)
def test_context_writes_are_stored_unchanged_or_refused(key, value):
    ctx = Context()
    try:
        ctx[key] = value
    except ContextValidationError:
        assert len(ctx) == 0 and not ctx.dirty
        return
    assert same(ctx.to_dict(), {key: value})


@pytest.mark.django_db
@given(value=json_ish)
def test_step_results_round_trip_through_the_database_or_fail_the_step(chrono_forge_env, value):
    Workflow.objects.all().delete()
    chrono_forge_env.drop_pending()
    a.FLAGS["result"] = value
    try:
        a.StoresResult.perform_now("k")
    except CLEAR:
        assert Workflow.objects.get(key="k").state == "stalled"
        return
    log = Workflow.objects.get(key="k").execution_logs.get(step_name="durably_execute$produce")
    assert same(log.result, value)


# -- keys and names --------------------------------------------------------------------------------
@pytest.mark.django_db
@given(key=keys | st.binary(max_size=4) | st.text(min_size=250, max_size=260))
def test_workflow_keys_are_stored_unchanged_or_refused(chrono_forge_env, key):
    Workflow.objects.all().delete()
    try:
        row = a.Loose.perform_later(key)
    except CLEAR:
        assert Workflow.objects.count() == 0
        return
    assert same(Workflow.objects.get(pk=row.pk).key, key)


@pytest.mark.django_db
@given(name=text | st.integers() | st.none())
def test_step_names_are_stored_unchanged_or_refused(chrono_forge_env, name):
    Workflow.objects.all().delete()
    a.FLAGS["call"] = lambda wf: wf.durably_execute(wf.step, name=name)
    try:
        a.CallSite.perform_now("k")
    except CLEAR:
        wf = Workflow.objects.get(key="k")
        assert wf.state == "stalled" and not wf.execution_logs.exists()
        return
    (log,) = Workflow.objects.get(key="k").execution_logs.exclude(step_name__startswith="$")
    assert log.step_name == f"durably_execute${'step' if name is None else name}"


# -- durations and policies ------------------------------------------------------------------------
durations = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.timedeltas()
    | st.sampled_from([timedelta.max, timedelta.min, None, "5", True])
)


@given(durations)
def test_durations_are_accepted_exactly_or_refused_as_invalid_step_arguments(value):
    try:
        delta = duration_arg(value, where="wait$x", what="duration")
    except InvalidStepArgument:
        return
    expected = value if isinstance(value, timedelta) else timedelta(seconds=value)
    assert delta == expected


policy_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": st.none() | st.integers(-3, 20) | st.floats() | st.booleans(),
        "base": durations,
        "cap": durations,
        "jitter": st.booleans() | st.integers(0, 1) | st.none(),
        "retry_on": st.none()
        | st.lists(st.sampled_from([KeyError, ValueError, int, "KeyError"]), max_size=3)
        | st.sampled_from([KeyError, "KeyError", {KeyError}]),
    },
)


@given(policy_kwargs, st.integers(1, 10_000))
def test_retry_policies_build_or_raise_clearly_and_backoff_never_overflows(kwargs, attempts):
    try:
        policy = RetryPolicy(**kwargs)
    except CLEAR:
        return
    delay = policy.backoff(attempts)
    assert 0 <= delay <= policy.cap and math.isfinite(delay)
    timedelta(seconds=delay)  # always addable to the clock


@given(st.lists(st.just(RetryPolicy()) | st.integers() | st.text(max_size=3), max_size=3))
def test_policy_lists_coerce_or_raise_clearly(policies):
    try:
        coerce(policies)
    except CLEAR:
        return


# -- error text ------------------------------------------------------------------------------------
@given(st.text(st.characters(codec=None), max_size=200), st.integers(1, 100))
def test_error_text_is_always_storable_and_bounded(message, limit):
    stored = storable_text(message, limit)
    stored.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in stored and len(stored) <= limit
    if len(message) <= limit and "\x00" not in message:
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            return
        assert stored == message  # nothing to fix: unchanged
