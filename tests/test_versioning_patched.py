"""``patched()`` and ``deprecate_patch()``: runs on both sides of a deploy keep a path that fits
their history, and the answer never changes once given."""

from __future__ import annotations

import pytest

from chrono_forge.exceptions import DuplicateStepName, InvalidStepName
from chrono_forge.graph import durable_steps
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.testing import assert_crash_safe
from tests import workflows_versioning as wv
from tests.core_sql import capture, data_statements, statements

pytestmark = pytest.mark.django_db


def open_gate(key: str, gate: str) -> None:
    wv.OPEN.add(f"{key}:{gate}")


def wake(cls, key: str, env) -> Workflow:
    cls.perform_later(key)
    env.run_all()
    return Workflow.objects.get(key=key)


def markers(key: str) -> dict[str, object]:
    """patch$<id> -> the remembered answer."""
    rows = ExecutionLog.objects.filter(workflow__key=key, step_name__startswith="patch$")
    return dict(rows.values_list("step_name", "result"))


def steps_of(key: str) -> list[str]:
    return list(
        ExecutionLog.objects.filter(workflow__key=key)
        .order_by("id")
        .values_list("step_name", flat=True)
    )


# -- the two sides of a deploy ---------------------------------------------------------------------
def test_a_run_started_after_the_change_takes_the_new_path(chrono_forge_env):
    wv.DEPLOYED.add("add-audit")
    wv.AuditedOrder.perform_later("new")
    chrono_forge_env.run_all()
    open_gate("new", "approved")
    wake(wv.AuditedOrder, "new", chrono_forge_env)
    open_gate("new", "packed")
    row = wake(wv.AuditedOrder, "new", chrono_forge_env)
    assert row.state == "completed"
    assert wv.CALLS == {"charge": 1, "audit": 1, "ship": 1}
    assert markers("new") == {"patch$add-audit": True}
    assert steps_of("new")[:4] == [
        "durably_execute$charge",
        "continue_if$approved",
        "patch$add-audit",
        "durably_execute$audit",
    ]


def test_a_run_parked_before_the_patch_point_at_the_deploy_takes_the_new_path(chrono_forge_env):
    wv.AuditedOrder.perform_later("early")
    chrono_forge_env.run_all()  # old code: charge, parked at "approved"
    wv.DEPLOYED.add("add-audit")
    open_gate("early", "approved")
    row = wake(wv.AuditedOrder, "early", chrono_forge_env)
    assert row.state == "idle" and row.parked_on == "continue_if$packed"
    assert markers("early") == {"patch$add-audit": True}
    assert wv.CALLS == {"charge": 1, "audit": 1}
    open_gate("early", "packed")
    assert wake(wv.AuditedOrder, "early", chrono_forge_env).state == "completed"
    assert wv.CALLS == {"charge": 1, "audit": 1, "ship": 1}


def test_a_run_already_past_the_patch_point_at_the_deploy_keeps_the_old_path(chrono_forge_env):
    wv.AuditedOrder.perform_later("late")
    chrono_forge_env.run_all()
    open_gate("late", "approved")
    wake(wv.AuditedOrder, "late", chrono_forge_env)  # old code: past the point, parked at "packed"
    wv.DEPLOYED.add("add-audit")
    wake(wv.AuditedOrder, "late", chrono_forge_env)  # a wake-up with the gate still closed
    assert markers("late") == {"patch$add-audit": False}
    open_gate("late", "packed")
    row = wake(wv.AuditedOrder, "late", chrono_forge_env)
    assert row.state == "completed"
    assert wv.CALLS == {"charge": 1, "ship": 1}  # never audited: its history has no room for it
    assert "durably_execute$audit" not in steps_of("late")


def test_the_answer_is_remembered_and_stable_across_later_passes(chrono_forge_env):
    wv.DEPLOYED.add("add-audit")
    wv.AuditedOrder.perform_later("new")
    chrono_forge_env.run_all()
    open_gate("new", "approved")
    for _ in range(4):  # the first wake decides, the next ones replay (parked at "packed")
        wake(wv.AuditedOrder, "new", chrono_forge_env)
    assert markers("new") == {"patch$add-audit": True}
    assert wv.CALLS["audit"] == 1
    assert ExecutionLog.objects.filter(step_name="patch$add-audit").count() == 1


def test_a_remembered_false_holds_even_once_the_later_steps_are_gone(chrono_forge_env):
    # The marker, not the frontier, answers later passes: deleting the steps that made the answer
    # False (as a cleanup of a stray row could) does not flip the run onto the new path.
    wv.AuditedOrder.perform_later("late")
    chrono_forge_env.run_all()
    open_gate("late", "approved")
    wake(wv.AuditedOrder, "late", chrono_forge_env)
    wv.DEPLOYED.add("add-audit")
    wake(wv.AuditedOrder, "late", chrono_forge_env)
    assert markers("late") == {"patch$add-audit": False}
    ExecutionLog.objects.filter(workflow__key="late", step_name="continue_if$packed").delete()
    open_gate("late", "packed")
    assert wake(wv.AuditedOrder, "late", chrono_forge_env).state == "completed"
    assert "audit" not in wv.CALLS


# -- nested patches and loops ----------------------------------------------------------------------
def drive_nested(env, key: str, *, deploy_v2_at: str, deploy_v3_at: str) -> dict:
    """Run NestedPatches through its gates, deploying v2 and v3 when the run is parked at the
    named gate ("start": before the run starts)."""
    for gate in ("start", "first", "second"):
        if deploy_v2_at == gate:
            wv.DEPLOYED.add("v2")
        if deploy_v3_at == gate:
            wv.DEPLOYED.add("v3")
        if gate == "start":
            wv.NestedPatches.perform_later(key)
            env.run_all()
        else:
            open_gate(key, gate)
            wake(wv.NestedPatches, key, env)
    assert Workflow.objects.get(key=key).state == "completed"
    return markers(key)


@pytest.mark.parametrize(
    ("v2_at", "v3_at", "answers", "ran"),
    [
        # both deployed before the run started
        ("start", "start", {"patch$v2": True, "patch$v3": True}, {"v2_step", "v3_step"}),
        # started under v2, v3 deployed while parked before the point: both new
        ("start", "first", {"patch$v2": True, "patch$v3": True}, {"v2_step", "v3_step"}),
        # started under v2, v3 deployed once past the point: v2's path without v3
        ("start", "second", {"patch$v2": True, "patch$v3": False}, {"v2_step"}),
        # started under v1, both deployed once past the point: v3 is never asked
        ("second", "second", {"patch$v2": False}, set()),
        # started under v1, both deployed while parked before the point
        ("first", "first", {"patch$v2": True, "patch$v3": True}, {"v2_step", "v3_step"}),
    ],
)
def test_nested_patches(chrono_forge_env, v2_at, v3_at, answers, ran):
    assert drive_nested(chrono_forge_env, "n", deploy_v2_at=v2_at, deploy_v3_at=v3_at) == answers
    assert set(wv.CALLS) - {"start", "end"} == ran
    assert wv.CALLS["start"] == wv.CALLS["end"] == 1


def test_a_patch_in_a_loop_with_one_id_per_iteration(chrono_forge_env):
    wv.PatchInLoop.perform_later("loop")
    chrono_forge_env.run_all()
    open_gate("loop", "gate_0")
    wake(wv.PatchInLoop, "loop", chrono_forge_env)  # old code: items 0 and 1 processed
    wv.DEPLOYED.add("audit-each")
    for gate in ("gate_1", "gate_2"):
        open_gate("loop", gate)
        row = wake(wv.PatchInLoop, "loop", chrono_forge_env)
    assert row.state == "completed"
    # items 0 and 1 were past their patch point at the deploy; item 2 was not
    assert markers("loop") == {
        "patch$audit-0": False,
        "patch$audit-1": False,
        "patch$audit-2": True,
    }
    assert wv.CALLS == {"process_0": 1, "process_1": 1, "audit_2": 1, "process_2": 1}


# -- deprecate_patch -------------------------------------------------------------------------------
def test_deprecate_patch_keeps_the_new_path_and_stores_nothing(chrono_forge_env):
    wv.Deprecated.perform_later("d")
    chrono_forge_env.run_all()
    open_gate("d", "approved")
    wake(wv.Deprecated, "d", chrono_forge_env)
    assert markers("d") == {"patch$add-audit": True}
    wv.DEPLOYED.add("deprecated")  # every old-path run drained: the patched() call is gone
    wv.Deprecated.perform_later("fresh")
    chrono_forge_env.run_all()
    open_gate("fresh", "approved")
    wake(wv.Deprecated, "fresh", chrono_forge_env)
    assert markers("fresh") == {}  # no marker for runs that never asked
    for key in ("d", "fresh"):
        open_gate(key, "packed")
        assert wake(wv.Deprecated, key, chrono_forge_env).state == "completed"
    assert wv.CALLS == {"charge": 2, "audit": 2, "ship": 2}


def test_dropping_the_call_entirely_leaves_old_markers_unread(chrono_forge_env):
    # A patch marker is not a step a replay has to revisit: code without the call replays fine.
    wv.DEPLOYED.add("add-audit")
    wv.PatchThenWait.perform_later("p")
    chrono_forge_env.run_due()
    assert markers("p") == {"patch$add-audit": True}
    wv.DEPLOYED.clear()
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="p").state == "completed"


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("deprecate", [False, True])
@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("empty", "must be a non-empty string"),
        ("dollar", "must not contain '$'"),
        ("int", "must be a non-empty string"),
        ("none", "must be a non-empty string"),
        ("nul", "without NUL"),
        ("surrogate", "lone surrogate"),
        ("long", "longer than 255 characters"),
    ],
)
def test_a_bad_change_id_stalls_with_a_clear_error_and_stores_no_marker(
    chrono_forge_env, bad, says, deprecate
):
    with pytest.raises(InvalidStepName) as raised:
        wv.BadPatch.perform_now("bad", bad=bad, deprecate=deprecate)
    message = str(raised.value)
    assert says in message
    assert "patched() change id" in message or "patch$" in message
    row = Workflow.objects.get(key="bad")
    assert row.state == "stalled"
    assert steps_of("bad") == ["durably_execute$before"]  # nothing stored after the bad call
    assert ErrorLog.objects.get(workflow=row).error_class.endswith("InvalidStepName")


def test_the_same_change_id_twice_in_one_pass_stalls_naming_both_calls(chrono_forge_env):
    with pytest.raises(DuplicateStepName) as raised:
        wv.BadPatch.perform_now("twice", twice=True)
    message = str(raised.value)
    assert "patch$same is used twice in one pass" in message
    assert "its own change id" in message and message.count("workflows_versioning.py:") == 2
    assert Workflow.objects.get(key="twice").state == "stalled"
    assert "durably_execute$after" not in steps_of("twice")


# -- cost ------------------------------------------------------------------------------------------
def test_the_first_answer_is_one_insert_and_a_replayed_one_costs_no_statement(chrono_forge_env):
    wv.PatchThenWait.perform_later("with")
    wv.PatchThenWait.perform_later("without", patch=False)
    first, replay = {}, {}
    for key in ("with", "without"):
        with capture() as queries:
            wv.PatchThenWait._execute(key)
        first[key] = queries
    for key in ("with", "without"):
        chrono_forge_env.advance(60)
        with capture() as queries:
            wv.PatchThenWait._execute(key, token=None)
        replay[key] = queries
    # first pass: the marker's INSERT and the audit step's INSERT + completion are the difference
    inserts = {key: statements(q, "INSERT") for key, q in first.items()}
    assert len(inserts["with"]) - len(inserts["without"]) == 2
    assert markers("with") == {"patch$add-audit": True}
    # the replay pass: the same statements whether the run has a patch marker or not
    assert len(data_statements(replay["with"])) == len(data_statements(replay["without"]))
    assert Workflow.objects.get(key="with").state == "completed"


def test_crash_safe_at_every_boundary_with_a_patch():
    wv.DEPLOYED.add("add-audit")
    report = assert_crash_safe(wv.PatchThenWait, "crash")
    assert any("patch$add-audit inserted" in str(b) for b in report.boundaries)


# -- the definition graph --------------------------------------------------------------------------
def test_the_graph_lists_patch_points():
    steps, _warnings = durable_steps(wv.PatchThenWait)
    assert [s.step_name for s in steps if s.kind == "patch"] == ["patch$add-audit"]


# -- the admin -------------------------------------------------------------------------------------
def test_the_workflow_page_shows_each_answer_in_the_timeline(client, operator, chrono_forge_env):
    from django.urls import reverse

    wv.DEPLOYED.add("add-audit")
    wv.AuditedOrder.perform_later("new")
    chrono_forge_env.run_all()
    open_gate("new", "approved")
    row = wake(wv.AuditedOrder, "new", chrono_forge_env)
    page = client.get(reverse("admin:chrono_forge_workflow_change", args=[row.pk])).context["page"]
    patch = [r for r in page.timeline if r.step.kind == "patch"]
    assert [(r.step.label, r.step.name, r.status, r.result) for r in patch] == [
        ("patched", "add-audit", "done", "true")
    ]
