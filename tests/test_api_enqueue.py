"""The enqueue contract: the key is positional-only, kwargs are checked against ``perform()``
before anything is stored, JSON a database would alter is refused, and sizes are bounded by
settings. The same rules hold for context values, step results and spawned children's kwargs."""

from __future__ import annotations

import math

import pytest
from django.test import override_settings

from chrono_forge import clock
from chrono_forge.context import Context
from chrono_forge.exceptions import (
    ConcurrentExecutionError,
    ContextValidationError,
    InvalidStepArgument,
    InvalidStepResult,
)
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_api as a

pytestmark = pytest.mark.django_db

ENQUEUERS = ["perform_later", "perform_now"]


def nothing_stored(env) -> bool:
    return Workflow.objects.count() == 0 and env.pending == []


def deep(levels: int):
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


#: (value, error): JSON that a database would alter or reject, at any depth.
ALTERED = [
    ((1, 2), TypeError),  # would come back as a list
    ({1: "a", "1": "b"}, TypeError),  # colliding keys
    ({1: "a"}, TypeError),  # non-string key
    ({None: "a"}, TypeError),
    ({"k": {True: 1}}, TypeError),
    ({2.5: 1}, TypeError),
    ("lone \ud800 surrogate", ValueError),
    ({"lone \udfff": 1}, ValueError),
    ("nul \x00", ValueError),
    ([["deep \x00"]], ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (1e16, ValueError),  # PostgreSQL returns 10000000000000000, an int
    (-1.5e300, ValueError),
    (-0.0, ValueError),  # PostgreSQL returns 0.0
    (10**4000, ValueError),  # beyond Python's int-to-text limit
    (deep(65), ValueError),  # deeper than JSON_MAX_DEPTH: a clear error, not a RecursionError
    (deep(5000), ValueError),
    ({1, 2}, TypeError),
    (b"bytes", TypeError),
    (object(), TypeError),
]


# -- the key ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ENQUEUERS)
def test_a_workflow_argument_named_key_is_an_ordinary_argument(chrono_forge_env, how):
    wf = getattr(a.TakesKey, how)("k1", key="customer-7")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get(pk=wf.pk)
    assert (wf.key, wf.kwargs, wf.state) == ("k1", {"key": "customer-7"}, "completed")
    assert wf.context == {"customer": "customer-7"}


# -- kwargs against perform()'s signature ----------------------------------------------------------
@pytest.mark.parametrize("how", ENQUEUERS)
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"orderid": 1}, r"Strict\.perform\(\).*(orderid|order_id)"),
        ({}, r"Strict\.perform\(\): missing a required (keyword-only )?argument: 'order_id'"),
        ({"order_id": 1, "notes": "x"}, r"unexpected keyword argument\(s\) 'notes'"),
    ],
)
def test_kwargs_not_matching_perform_raise_type_error_before_anything_is_stored(
    chrono_forge_env, how, kwargs, match
):
    with pytest.raises(TypeError, match=match):
        getattr(a.Strict, how)("k", **kwargs)
    assert nothing_stored(chrono_forge_env) and a.CALLS == {}


def test_matching_kwargs_and_var_keyword_perform_are_accepted(chrono_forge_env):
    a.Strict.perform_later("k", order_id=7)
    a.Loose.perform_later("k", anything={"goes": [1]}, at="all")
    chrono_forge_env.run_all()
    assert set(Workflow.objects.values_list("state", flat=True)) == {"completed"}


def test_a_wake_up_of_an_existing_key_needs_no_kwargs(chrono_forge_env):
    wf = a.Strict.perform_later("k", order_id=7)
    chrono_forge_env.drop_pending()
    assert a.Strict.perform_later("k").pk == wf.pk  # the row keeps its order_id
    chrono_forge_env.run_all()
    assert Workflow.objects.get(pk=wf.pk).context == {"order_id": 7}


def test_a_misspelled_kwarg_is_refused_even_for_an_existing_key(chrono_forge_env):
    a.Strict.perform_later("k", order_id=7)
    with pytest.raises(TypeError, match="orderid"):
        a.Strict.perform_later("k", orderid=7)


# -- JSON that would change on the way in ----------------------------------------------------------
@pytest.mark.parametrize("how", ENQUEUERS)
@pytest.mark.parametrize("value,error", ALTERED)
def test_kwargs_a_database_would_alter_are_refused(chrono_forge_env, how, value, error):
    with pytest.raises(error):
        getattr(a.Loose, how)("k", value=value)
    assert nothing_stored(chrono_forge_env)


@pytest.mark.parametrize("value,error", ALTERED)
def test_options_a_database_would_alter_are_refused(chrono_forge_env, value, error):
    with pytest.raises(error):
        a.Loose.perform_later("k", options={"value": value})
    assert nothing_stored(chrono_forge_env)


def test_a_circular_value_is_refused():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="circular"):
        a.Loose.perform_later("k", value=loop)


def test_shared_references_cannot_make_the_check_explode(chrono_forge_env):
    """A DAG of 60 levels of two references each is 2**60 nodes when walked: refused by size."""
    value: list = []
    for _ in range(60):
        value = [value, value]
    with pytest.raises(ValueError, match="KWARGS_MAX_BYTES"):
        a.Loose.perform_later("k", value=value)
    assert nothing_stored(chrono_forge_env)


@pytest.mark.parametrize(
    "value",
    [
        {"nested": [1, -2, 3.25, 0.0, 1e15, -1e-300, 5e-324, None, True, "é€😀", "\\u0000"]},
        {"big": 2**64, "neg": -(2**70)},
        deep(63),  # with the kwargs dict around it: 64 levels, the limit
        "",
        [],
    ],
)
def test_values_at_the_edges_round_trip_unchanged(chrono_forge_env, value):
    wf = a.Loose.perform_later("k", value=value, options={"value": value})
    stored = Workflow.objects.get(pk=wf.pk)
    assert stored.kwargs == {"value": value} and stored.options == {"value": value}


# -- sizes -----------------------------------------------------------------------------------------
def test_kwargs_and_options_together_are_bounded_by_kwargs_max_bytes(chrono_forge_env):
    with override_settings(CHRONO_FORGE={"KWARGS_MAX_BYTES": 100}):
        a.Loose.perform_later("fits", blob="x" * 40, options={"o": "y" * 40})
        with pytest.raises(ValueError, match="KWARGS_MAX_BYTES"):
            a.Loose.perform_later("kwargs", blob="x" * 100)
        with pytest.raises(ValueError, match="KWARGS_MAX_BYTES"):
            a.Loose.perform_later("both", blob="x" * 50, options={"o": "y" * 50})
    assert list(Workflow.objects.values_list("key", flat=True)) == ["fits"]


def test_the_default_kwargs_limit_is_64_kb(chrono_forge_env):
    with pytest.raises(ValueError, match=r"65536 bytes \(KWARGS_MAX_BYTES\)"):
        a.Loose.perform_later("k", blob="x" * (64 * 1024))
    assert nothing_stored(chrono_forge_env)


# -- context ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,error", ALTERED)
def test_context_values_a_database_would_alter_are_refused(value, error):
    ctx = Context()
    with pytest.raises(ContextValidationError):
        ctx["k"] = value
    assert not ctx.dirty and "k" not in ctx


@pytest.mark.parametrize("key", ["", 1, None, ("a",), "nul\x00", "lone \ud800", "k" * 256])
def test_bad_context_keys_are_refused(key):
    ctx = Context()
    with pytest.raises(ContextValidationError):
        ctx[key] = 1
    with pytest.raises(ContextValidationError):
        ctx.merge({"fine": 1, key: 2})
    assert len(ctx) == 0 and not ctx.dirty


def test_the_context_key_length_is_a_setting():
    with override_settings(CHRONO_FORGE={"CONTEXT_KEY_MAX_LENGTH": 3}):
        ctx = Context()
        ctx["abc"] = 1
        with pytest.raises(ContextValidationError, match="CONTEXT_KEY_MAX_LENGTH"):
            ctx["abcd"] = 1


def test_the_whole_context_is_bounded_by_context_max_bytes():
    with override_settings(CHRONO_FORGE={"CONTEXT_MAX_BYTES": 100}):
        ctx = Context({"old": "x" * 40})
        ctx["new"] = "y" * 40  # 2 + 48 + 48 = 98 bytes
        with pytest.raises(ContextValidationError, match="CONTEXT_MAX_BYTES"):
            ctx["more"] = 1
        with pytest.raises(ContextValidationError, match="CONTEXT_MAX_BYTES"):
            ctx.merge({"a": 1, "b": 2})
        ctx["new"] = "z"  # replacing a value frees its bytes
        ctx["more"] = 1
        del ctx["old"]
        ctx["other"] = "w" * 40
    assert ctx.to_dict() == {"new": "z", "more": 1, "other": "w" * 40}


def test_a_context_over_its_total_limit_stalls_the_workflow(chrono_forge_env):
    a.FLAGS["context"] = {"a": "x" * 60, "b": "y" * 60}
    with override_settings(CHRONO_FORGE={"CONTEXT_MAX_BYTES": 100}):
        wf = a.WritesContext.perform_now("k")
    assert wf.state == "stalled" and chrono_forge_env.pending == []
    assert ErrorLog.objects.get(workflow=wf).error_class.endswith("ContextValidationError")


# -- step results ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value,error", ALTERED)
def test_step_results_a_database_would_alter_fail_the_step(chrono_forge_env, value, error):
    a.FLAGS["result"] = value
    with pytest.raises(InvalidStepResult):
        a.StoresResult.perform_now("k")
    wf = Workflow.objects.get(key="k")
    step = ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$produce")
    assert (wf.state, step.state, step.result) == ("stalled", "failed", None)
    assert ErrorLog.objects.filter(workflow=wf).count() == 1
    assert a.CALLS == {"StoresResult.produce": 1} and chrono_forge_env.pending == []


# -- spawned children ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "child,kwargs,match",
    [
        (a.Strict, {"orderid": 1}, "orderid"),
        (a.Strict, {}, "order_id"),
        (a.Loose, {"value": (1, 2)}, "tuple"),
        (a.Loose, {"value": {1: "a"}}, "JSON keys are strings"),
        (a.Loose, {"value": "nul\x00"}, "NUL"),
        (a.Loose, {"value": deep(100)}, "deeper"),
    ],
)
def test_bad_child_kwargs_stall_the_parent_with_nothing_spawned(
    chrono_forge_env, child, kwargs, match
):
    a.FLAGS.update(child=child, child_kwargs=kwargs)
    with pytest.raises(InvalidStepArgument, match=match):
        a.SpawnsChild.perform_now("p")
    parent = Workflow.objects.get(key="p")
    assert parent.state == "stalled" and Workflow.objects.count() == 1
    assert ErrorLog.objects.filter(workflow=parent).count() == 1


def test_bad_spawn_each_kwargs_stall_the_parent(chrono_forge_env):
    a.FLAGS["build"] = (a.Strict, {"orderid": 1})
    with pytest.raises(InvalidStepArgument, match="orderid"):
        a.SpawnsEach.perform_now("p")
    assert Workflow.objects.get(key="p").state == "stalled" and Workflow.objects.count() == 1


def test_good_child_kwargs_are_stored_unchanged(chrono_forge_env):
    a.FLAGS.update(child=a.Strict, child_kwargs={"order_id": {"id": [1, 2.5]}})
    a.SpawnsChild.perform_later("p")
    chrono_forge_env.run_all()
    child = Workflow.objects.get(key="p$kids$one")
    assert child.kwargs == {"order_id": {"id": [1, 2.5]}} and child.state == "completed"


# -- what perform_now / perform_later do with a busy or finished key -------------------------------
def test_perform_now_on_a_locked_workflow_raises_concurrent_execution_error(chrono_forge_env):
    wf = a.Loose.perform_later("k")
    Workflow.objects.filter(pk=wf.pk).update(
        state="running", locked_by="another-pass", locked_at=clock.now()
    )
    with pytest.raises(ConcurrentExecutionError, match="another-pass"):
        a.Loose.perform_now("k")
    assert a.CALLS == {}


def test_perform_later_on_a_completed_key_returns_the_row_and_runs_nothing(chrono_forge_env):
    first = a.Loose.perform_now("k", n=1)
    assert first.state == "completed"
    again = a.Loose.perform_later("k", n=2)
    chrono_forge_env.run_all()
    assert (again.pk, again.state, again.kwargs) == (first.pk, "completed", {"n": 1})
    assert a.CALLS == {"Loose.perform": 1}
