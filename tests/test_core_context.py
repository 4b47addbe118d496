"""The workflow context and the error-log snapshot."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from chrono_forge.context import Context
from chrono_forge.errors import OMITTED, context_snapshot
from chrono_forge.exceptions import ContextValidationError
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_core as w
from tests.core_sql import WORKFLOW, SqlLog

KB = 1024


# -- context validation ----------------------------------------------------------------------------
def test_stored_containers_are_deep_copies():
    source = {"a": [1, {"b": 2}]}
    ctx = Context()
    ctx["k"] = source
    source["a"][1]["b"] = 99
    source["a"].append(3)
    assert ctx["k"] == {"a": [1, {"b": 2}]}


@pytest.mark.parametrize("value", [{1: "a"}, {"nested": {2: "b"}}, {None: 1}, {(1, 2): 3}])
def test_non_string_dict_keys_are_refused_at_any_depth(value):
    """JSON would turn them into strings (and two keys could collide): refused, not altered."""
    ctx = Context()
    with pytest.raises(ContextValidationError, match="JSON keys are strings"):
        ctx["k"] = value
    assert "k" not in ctx and not ctx.dirty


@pytest.mark.parametrize(
    "value",
    [
        "x" * (16 * KB + 1),
        "é" * (8 * KB + 1),  # 2 bytes each: over the limit in bytes, not in characters
        {"blob": "x" * (16 * KB)},
        ["x" * (16 * KB)],
    ],
)
def test_values_over_16_kb_serialised_are_rejected(value):
    ctx = Context()
    with pytest.raises(ContextValidationError, match="limit"):
        ctx["big"] = value
    assert "big" not in ctx and not ctx.dirty


def test_the_limit_is_a_setting():
    with override_settings(CHRONO_FORGE={"CONTEXT_VALUE_MAX_BYTES": 10}):
        with pytest.raises(ContextValidationError):
            Context()["k"] = "x" * 11
        Context()["k"] = "x" * 10


def test_moderate_values_are_accepted():
    ctx = Context()
    ctx["text"] = "x" * 1000
    ctx["small"] = {"a": 1, "b": [1, 2]}
    assert len(ctx["text"]) == 1000


def test_allowed_types_and_scalars_preserved():
    ctx = Context()
    for key, value in {"int": 42, "float": 1.5, "str": "hi", "bool": True, "none": None}.items():
        ctx[key] = value
        assert ctx[key] == value and type(ctx[key]) is type(value)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        (1, 2),
        b"bytes",
        float("nan"),
        float("inf"),
        {"nested": object()},
        [1, object()],
        {(1, 2): "tuple key"},
        "nul\x00",
        ["nul\x00"],
        {"key\x00": 1},
    ],
)
def test_other_types_are_rejected(value):
    with pytest.raises(ContextValidationError):
        Context()["k"] = value


@pytest.mark.parametrize("key", ["", 1, None, "nul\x00"])
def test_keys_must_be_non_empty_strings(key):
    with pytest.raises(ContextValidationError):
        Context()[key] = 1


def test_missing_key_raises_key_error_and_get_defaults():
    ctx = Context({"a": 1})
    with pytest.raises(KeyError):
        ctx["missing"]
    assert ctx.get("missing", "d") == "d"


def test_merge_is_atomic_and_returns_self():
    ctx = Context({"keep": 1})
    assert ctx.merge({"a": 1, "b": 2}) is ctx
    assert dict(ctx) == {"keep": 1, "a": 1, "b": 2}
    with pytest.raises(ContextValidationError):
        ctx.merge({"c": 3, "bad": object()})
    assert "c" not in ctx
    fresh = Context()
    fresh.merge({})
    assert not fresh.dirty
    assert Context.set_multiple is Context.merge


def test_merge_once_sets_only_absent_keys_and_skips_present_ones_unvalidated():
    ctx = Context({"present": "old"})
    assert ctx.merge_once({"present": "x" * (20 * KB), "new": 1}) is ctx
    assert dict(ctx) == {"present": "old", "new": 1}
    with pytest.raises(ContextValidationError):
        ctx.merge_once({"n1": 1, "n2": object()})
    assert "n1" not in ctx
    assert Context.set_multiple_once is Context.merge_once


def test_set_and_set_once():
    ctx = Context()
    ctx.set("a", 1)
    assert ctx.set_once("a", 2) is False and ctx.set_once("b", 3) is True
    assert dict(ctx) == {"a": 1, "b": 3}


def test_delete_marks_dirty():
    ctx = Context({"a": 1})
    del ctx["a"]
    assert ctx.dirty and "a" not in ctx


@pytest.mark.django_db
def test_an_unchanged_context_is_not_written(chrono_forge_env):
    w.Steps.perform_later("clean", n=1)
    with SqlLog() as sql:
        chrono_forge_env.run_all()
    assert sql.of("UPDATE", WORKFLOW), sql.dump()
    assert not any('"context"' in s.sql for s in sql.of("UPDATE", WORKFLOW)), sql.dump()


@pytest.mark.django_db
def test_a_changed_context_is_written_once_in_the_release(chrono_forge_env):
    wf = w.Steps.perform_later("dirty", n=3, context_write=True)
    with SqlLog() as sql:
        chrono_forge_env.run_all()
    assert sum('"context"' in s.sql for s in sql.of("UPDATE", WORKFLOW)) == 1, sql.dump()
    assert Workflow.objects.get(pk=wf.pk).context == {"written": True}


@pytest.mark.django_db
def test_an_oversized_context_value_in_perform_stalls_and_is_never_stored(chrono_forge_env):
    wf = w.OversizedContext.perform_later("big", size=17 * KB)
    chrono_forge_env.run_due()
    wf.refresh_from_db()
    error = ErrorLog.objects.get(workflow=wf)
    assert error.error_class == "chrono_forge.exceptions.ContextValidationError"
    assert "'big'" in error.error_message and "limit" in error.error_message
    # the oversized value is not stored (earlier writes of the pass are); the same code would write
    # it again on every retry, so the workflow stalls for a fix instead of retrying
    assert wf.context == {"small": "kept"}
    assert wf.state == "stalled" and chrono_forge_env.pending == []


@pytest.mark.django_db
def test_an_error_message_with_a_nul_character_is_recorded(chrono_forge_env):
    wf = w.NulMessage.perform_later("nul")
    chrono_forge_env.run_due()
    error = ErrorLog.objects.get(workflow=wf)
    assert error.error_message == "bad\\x00byte" and "\x00" not in error.backtrace


# -- error-log snapshot ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_small_context_is_copied_into_the_error_log(chrono_forge_env):
    w.FLAGS["context"] = {"order": 7, "items": ["a", "b"]}
    wf = w.ErrorContext.perform_later("small")
    chrono_forge_env.run_all()
    error = ErrorLog.objects.get(workflow=wf)
    assert error.context == {"order": 7, "items": ["a", "b"]}
    assert error.error_class == "tests.workflows_core.TransientError"
    assert error.error_message == "with context"
    assert "Traceback" in error.backtrace and "def fail" not in error.error_message
    assert "TransientError: with context" in error.backtrace


@pytest.mark.django_db
def test_a_context_over_the_snapshot_budget_keeps_every_key(chrono_forge_env):
    w.FLAGS["context"] = {f"v{i}": "x" * (15 * KB) for i in range(6)}  # ~90 KB, budget 64 KB
    wf = w.ErrorContext.perform_later("large")
    chrono_forge_env.run_all()
    snapshot = ErrorLog.objects.get(workflow=wf).context
    assert list(snapshot) == [f"v{i}" for i in range(6)]
    kept = [k for k, v in snapshot.items() if v != OMITTED]
    assert kept == ["v0", "v1", "v2", "v3"] and snapshot["v4"] == snapshot["v5"] == OMITTED
    assert len(json.dumps(snapshot, separators=(",", ":")).encode()) <= 64 * KB


@pytest.mark.django_db
def test_a_single_value_over_the_budget_is_omitted_and_siblings_kept(chrono_forge_env):
    w.FLAGS["context"] = {"huge": "x" * 2000, "small": "kept"}
    with override_settings(CHRONO_FORGE={"ERROR_CONTEXT_MAX_BYTES": 1000}):
        wf = w.ErrorContext.perform_later("huge")
        chrono_forge_env.run_all()
    error = ErrorLog.objects.get(workflow=wf)
    assert error.context == {"huge": OMITTED, "small": "kept"}
    assert error.error_message == "with context"


def test_snapshot_budget_is_measured_in_bytes():
    snapshot = context_snapshot({"a": "é" * 30, "b": "y"}, budget=40)
    assert snapshot == {"a": OMITTED, "b": "y"}


@pytest.mark.django_db
def test_step_and_workflow_errors_carry_step_name_and_attempt(chrono_forge_env):
    w.AlwaysFailsPerCall.perform_later("step")
    w.FailsOnce.perform_later("wf")
    chrono_forge_env.run_all()
    step_errors = ErrorLog.objects.filter(workflow__key="step").order_by("id")
    assert list(step_errors.values_list("step_name", "attempt")) == [
        ("durably_execute$always_fails", 1),
        ("durably_execute$always_fails", 2),
    ]
    [workflow_error] = ErrorLog.objects.filter(workflow__key="wf")
    assert (workflow_error.step_name, workflow_error.attempt) == (None, 0)  # 0-based job attempt
    marker = Workflow.objects.get(key="wf").execution_logs.get(
        step_name__startswith="$workflow_failure$"
    )
    assert marker.step_name == f"$workflow_failure${workflow_error.pk}"
    assert marker.metadata == {"error_log_id": workflow_error.pk}


@pytest.mark.django_db
def test_workflow_level_attempts_count_up_from_zero(chrono_forge_env):
    w.PermanentFailure.perform_later("ten")
    chrono_forge_env.run_all()
    attempts = list(ErrorLog.objects.order_by("id").values_list("attempt", flat=True))
    assert attempts == list(range(10))
    # the snapshot is taken at the time of each error
    assert [e.context["tried"] for e in ErrorLog.objects.order_by("id")] == list(range(1, 11))
