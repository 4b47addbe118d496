"""``graph CLASS``: the static listing of a workflow's durable steps."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chrono_forge.graph import as_dict, durable_steps
from chrono_forge.models import Workflow
from tests import workflows_ops as w


def names(cls):
    return [s.step_name for s in durable_steps(cls)[0]]


def test_a_linear_perform_lists_one_step_per_durable_call_in_order():
    assert names(w.GraphLinear) == [
        "wait_until$payment_confirmed",
        "wait$fraud_check_delay",
        "durably_execute$charge",
        "continue_if$carrier_webhook",
        "durably_repeat$remind",
        "branch$fulfil",
        "merge$audit,fulfil",
    ]
    steps, warnings = durable_steps(w.GraphLinear)
    assert warnings == []
    assert not any(s.conditional or s.in_loop for s in steps)
    by_kind = {s.kind: s for s in steps}
    assert by_kind["branch"].notes == ["fan-out"] and by_kind["merge"].notes == [
        "joins audit, fulfil"
    ]


def test_helpers_conditions_loops_and_dynamic_names():
    steps, warnings = durable_steps(w.GraphShapes)
    assert [s.step_name for s in steps] == [
        "durably_execute$validate",
        "durably_execute$reserve",
        "durably_execute$upgrade",
        "durably_execute$*",
        "durably_execute$notify",
    ]
    assert [s.method for s in steps[:2]] == ["prepare", "prepare_more"]  # helpers are followed
    assert [s.conditional for s in steps] == [False, False, True, False, False]
    assert [s.in_loop for s in steps] == [False, False, False, True, False]
    assert len(warnings) == 2
    assert "known only at run time" in warnings[0] and "inside a loop" in warnings[1]


def test_an_empty_perform_warns_and_the_dict_is_json_safe():
    steps, warnings = durable_steps(w.GraphEmpty)
    assert steps == [] and warnings == ["perform() has no durable steps"]
    data = as_dict(w.GraphShapes)
    assert json.loads(json.dumps(data)) == data


def run(*args):
    out = io.StringIO()
    call_command("chrono_forge", "graph", *args, stdout=out, no_color=True)
    return out.getvalue()


def test_graph_command_lists_the_steps():
    out = run("tests.workflows_ops.GraphLinear")
    assert out.splitlines()[0] == "tests.workflows_ops.GraphLinear.perform: 7 durable step(s)"
    assert "  1. wait_until$payment_confirmed" in out
    assert "branch$fulfil" in out and "(fan-out)" in out
    shapes = run("tests.workflows_ops.GraphShapes")
    assert "(conditional)" in shapes and "(in_loop)" in shapes and "warning: " in shapes


def test_graph_command_json():
    data = json.loads(run("tests.workflows_ops.GraphLinear", "--json"))
    assert data == as_dict(w.GraphLinear)


@pytest.mark.django_db
def test_graph_command_accepts_the_class_name_of_a_stored_run():
    Workflow.objects.create(job_class="tests.workflows_ops.GraphEmpty", key="k")
    assert "0 durable step(s)" in run("GraphEmpty")
    assert "no durable steps" in run("GraphEmpty")


@pytest.mark.django_db
def test_graph_command_refusals():
    with pytest.raises(CommandError, match="dotted path of 'Nowhere'"):
        run("Nowhere")
    with pytest.raises(CommandError, match="is not a registered workflow class"):
        run("tests.workflows_ops.Nowhere")
    with pytest.raises(CommandError, match="is not a registered workflow class"):
        run("tests.workflows_ops.TransientError")
