"""Replay-divergence detection: a pass that starts a new step while steps recorded by earlier
passes are not replayed yet records a ReplayDivergence (or stalls, if so configured)."""

from __future__ import annotations

import pytest
from django.core import checks
from django.urls import reverse

from chrono_forge.exceptions import ReplayDivergence
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_versioning as wv
from tests.core_sql import capture, statements

pytestmark = pytest.mark.django_db

DIVERGENCE = "chrono_forge.exceptions.ReplayDivergence"
ERROR_TABLE = ErrorLog._meta.db_table


def wake(cls, key, env):
    cls.perform_later(key)
    env.run_all()
    return Workflow.objects.get(key=key)


def divergences(key):
    return list(
        ErrorLog.objects.filter(workflow__key=key, error_class=DIVERGENCE).values_list(
            "step_name", "error_message"
        )
    )


def old_run_parked_at_g(env, key="old"):
    """A run of Changing under the old code: a and b done, parked at the gate."""
    wv.Changing.perform_later(key)
    env.run_all()
    assert Workflow.objects.get(key=key).parked_on == "continue_if$g"


def test_an_inserted_step_is_recorded_once_and_the_run_goes_on(chrono_forge_env):
    old_run_parked_at_g(chrono_forge_env)
    wv.DEPLOYED.add("insert-x")
    with capture() as queries:
        row = wake(wv.Changing, "old", chrono_forge_env)
    assert row.state == "idle" and row.parked_on == "continue_if$g"  # warn: it carried on
    [(step, message)] = divergences("old")
    assert step == "durably_execute$x"
    assert "not replayed: durably_execute$b" in message and "self.patched(" in message
    assert len(statements(queries, "INSERT", ERROR_TABLE)) == 1
    for _ in range(2):  # later passes replay x: no second warning
        wake(wv.Changing, "old", chrono_forge_env)
    wv.OPEN.add("old:g")
    assert wake(wv.Changing, "old", chrono_forge_env).state == "completed"
    assert len(divergences("old")) == 1
    assert wv.CALLS == {"a": 1, "b": 1, "x": 1, "c": 1}


def test_stall_mode_stalls_before_the_new_step_is_stored(chrono_forge_env, settings):
    settings.CHRONO_FORGE = {**settings.CHRONO_FORGE, "REPLAY_DIVERGENCE": "stall"}
    old_run_parked_at_g(chrono_forge_env)
    wv.DEPLOYED.add("insert-x")
    wv.Changing.perform_later("old")
    with pytest.raises(ReplayDivergence, match="durably_execute\\$x started"):
        chrono_forge_env.run_all()
    row = Workflow.objects.get(key="old")
    assert row.state == "stalled" and row.next_run_at is None  # blocked, with its reason
    assert [step for step, _ in divergences("old")] == ["durably_execute$x"]
    assert not ExecutionLog.objects.filter(step_name="durably_execute$x").exists()
    assert "x" not in wv.CALLS
    # the fix: deploy code whose replay matches (here: the old order), then retry
    wv.DEPLOYED.clear()
    wv.Changing.retry_now("old")
    assert Workflow.objects.get(key="old").parked_on == "continue_if$g"


def test_a_change_behind_patched_and_new_runs_are_not_divergences(chrono_forge_env):
    wv.AuditedOrder.perform_later("late")
    chrono_forge_env.run_all()
    wv.OPEN.add("late:approved")
    wake(wv.AuditedOrder, "late", chrono_forge_env)
    wv.DEPLOYED.update({"add-audit", "insert-x"})
    wv.OPEN.add("late:packed")
    assert wake(wv.AuditedOrder, "late", chrono_forge_env).state == "completed"
    wv.Changing.perform_later("new")
    chrono_forge_env.run_all()
    wv.OPEN.add("new:g")
    assert wake(wv.Changing, "new", chrono_forge_env).state == "completed"
    assert not ErrorLog.objects.filter(error_class=DIVERGENCE).exists()


def test_a_matching_replay_costs_nothing_more(chrono_forge_env):
    old_run_parked_at_g(chrono_forge_env)
    with capture() as queries:
        wake(wv.Changing, "old", chrono_forge_env)  # old code, gate still closed
    assert statements(queries, "INSERT", ERROR_TABLE) == []
    assert statements(queries, "SELECT", ERROR_TABLE) == []


def test_the_workflow_page_flags_the_run(client, operator, chrono_forge_env):
    old_run_parked_at_g(chrono_forge_env)
    wv.DEPLOYED.add("insert-x")
    row = wake(wv.Changing, "old", chrono_forge_env)
    response = client.get(reverse("admin:chrono_forge_workflow_change", args=[row.pk]))
    assert [e.step_name for e in response.context["page"].divergences] == ["durably_execute$x"]
    assert "Replay diverged:" in response.content.decode()
    clean = Workflow.objects.create(job_class=row.job_class, key="clean")
    response = client.get(reverse("admin:chrono_forge_workflow_change", args=[clean.pk]))
    assert "Replay diverged:" not in response.content.decode()


@pytest.mark.parametrize("value", ["explode", None, True])
def test_the_setting_is_checked(settings, value):
    settings.CHRONO_FORGE = {"REPLAY_DIVERGENCE": value}
    found = [m for m in checks.run_checks(databases=[]) if m.id == "chrono_forge.E050"]
    assert len(found) == 1 and "'warn', 'stall'" in found[0].msg


@pytest.mark.parametrize("value", ["warn", "stall"])
def test_the_setting_accepts_its_modes(settings, value):
    settings.CHRONO_FORGE = {"REPLAY_DIVERGENCE": value}
    assert not [m for m in checks.run_checks(databases=[]) if m.id == "chrono_forge.E050"]
