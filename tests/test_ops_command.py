"""``manage.py chrono_forge <sub>``: every subcommand, its success and its refusals."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_q.models import Schedule

from chrono_forge import maintenance
from chrono_forge.management.commands.chrono_forge import Command
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_ops as w

pytestmark = pytest.mark.django_db

ONE_STEP = "tests.workflows_ops.OneStep"
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def reset():
    w.StallsUntilFixed.FIXED = False


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("chrono_forge", *args, stdout=out, stderr=err, no_color=True)
    return out.getvalue(), err.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as info:
        run(*args)
    return str(info.value)


def make(key, state="idle", job_class=ONE_STEP, **fields):
    return Workflow.objects.create(job_class=job_class, key=key, state=state, **fields)


def test_errors_exit_non_zero_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        Command().run_from_argv(["manage.py", "chrono_forge", "--skip-checks", "show", "missing"])
    assert exit_info.value.code == 1
    assert "No workflow with key 'missing'" in capsys.readouterr().err


def test_a_subcommand_is_required():
    assert "SUBCOMMAND" in refused() or "required" in refused()


# -- list ------------------------------------------------------------------------------------------
def test_list_shows_newest_first_with_filters():
    make("a", "completed")
    make("b", "failed", job_class="tests.workflows_ops.Other")
    make("c", "idle")
    out, _ = run("list")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "CLASS", "KEY", "STATE"]
    assert [line.split()[2] for line in lines[1:]] == ["c", "b", "a"]

    assert [line.split()[2] for line in run("list", "--state", "failed")[0].splitlines()[1:]] == [
        "b"
    ]
    assert [line.split()[2] for line in run("list", "--class", "OneStep")[0].splitlines()[1:]] == [
        "c",
        "a",
    ]
    assert [
        line.split()[2]
        for line in run("list", "--class", "tests.workflows_ops.Other")[0].splitlines()[1:]
    ] == ["b"]
    limited = run("list", "--limit", "2")[0].splitlines()
    assert [line.split()[2] for line in limited[1:3]] == [
        "c",
        "b",
    ] and "use --limit for more" in limited[-1]


def test_list_with_nothing_to_show():
    assert run("list")[0].strip() == "No workflows match."
    make("a", "completed")
    assert run("list", "--state", "stalled")[0].strip() == "No workflows match."


def test_list_refuses_bad_filters():
    assert "invalid choice: 'done'" in refused("list", "--state", "done")
    assert "--limit" in refused("list", "--limit", "-3")
    assert "expected an integer from 1 to 100000, got '0'" in refused("list", "--limit", "0")


# -- show ------------------------------------------------------------------------------------------
def test_show_prints_the_timeline_with_each_error_under_its_step(chrono_forge_env):
    w.RetriesOnce.perform_later("order-1")
    chrono_forge_env.run_all()
    out, _ = run("show", "order-1")
    assert "RetriesOnce(order-1)" in out and "state: completed" in out
    flaky = out.index("durably_execute$flaky")
    finish = out.index("durably_execute$finish")
    error = out.index("TransientError: first call fails")
    assert flaky < error < finish  # the error is listed under its step
    assert "attempt 1" in out[flaky:finish]
    assert "attempts=2" in out[flaky:error] and "result: ok" in out[flaky:finish]
    assert "$workflow_completion$" in out
    assert "Errors outside any step" not in out


def test_show_resolves_the_failure_marker_and_lists_errors_outside_steps(chrono_forge_env):
    w.NeedsFix.perform_later("bad")
    chrono_forge_env.run_all()
    error = ErrorLog.objects.get()
    # an error naming a step the run has no log of belongs to no step
    stray = ErrorLog.objects.create(
        workflow=error.workflow,
        step_name="durably_execute$gone",
        attempt=1,
        error_class="KeyError",
        error_message="from a step since removed",
    )
    out, _ = run("show", "bad")
    assert (
        f"workflow failed: RuntimeError: not fixed yet: set context['fixed'] (ErrorLog #{error.pk})"
        in out
    )
    # The failure marker owns the error it names, as on the admin's workflow page: its card is
    # under the marker, with its attempt, and not repeated among the errors outside any step.
    marker = out.index("$workflow_failure$")
    orphans = out.index("Errors outside any step")
    assert "x attempt 0 RuntimeError: not fixed yet" in out[marker:orphans]
    assert "RuntimeError" not in out[orphans:]
    assert f"KeyError: from a step since removed (ErrorLog #{stray.pk}" in out[orphans:]


def test_show_says_when_the_failure_cause_was_deleted(chrono_forge_env):
    w.NeedsFix.perform_later("bad")
    chrono_forge_env.run_all()
    error_id = ErrorLog.objects.get().pk
    ErrorLog.objects.all().delete()
    assert f"workflow failed: ErrorLog #{error_id} (deleted)" in run("show", "bad")[0]


def test_show_summarises_repetitions_and_metadata():
    wf = make("rep", "running")
    ExecutionLog.objects.create(
        workflow=wf,
        step_name="durably_repeat$tick",
        state="pending",
        metadata={"every": 60, "last_execution_at": "2026-01-01T00:00:00+00:00"},
    )
    for i in range(7):
        ExecutionLog.objects.create(
            workflow=wf,
            step_name=f"durably_repeat$tick${1700000000 + i}",
            state="completed",
            attempts=1,
        )
    ErrorLog.objects.create(
        workflow=wf,
        step_name="durably_repeat$tick$1700000003",
        attempt=1,
        error_class="ValueError",
        error_message="tick broke",
    )
    out, _ = run("show", "rep")
    assert "metadata: " in out and '"every": 60' in out
    assert "7 repetition(s), last 5:" in out
    assert "durably_repeat$tick$1700000006" in out and "durably_repeat$tick$1700000001" not in out
    assert "ValueError: tick broke" in out and "Errors outside any step" not in out


def test_show_a_workflow_without_steps():
    make("new")
    out, _ = run("show", "new")
    assert "(no steps yet)" in out


def test_show_refuses_unknown_and_ambiguous_keys():
    assert "No workflow with key 'nope'" in refused("show", "nope")
    make("shared")
    make("shared", job_class="tests.workflows_ops.Other")
    message = refused("show", "shared")
    assert "several workflows" in message and "--class" in message
    assert "Other(shared)" in run("show", "shared", "--class", "Other")[0]
    assert "OneStep(shared)" in run("show", "shared", "--class", ONE_STEP)[0]
    assert "of class Missing" in refused("show", "shared", "--class", "Missing")


# -- resume / retry --------------------------------------------------------------------------------
def test_resume_enqueues_an_idle_workflow(chrono_forge_env):
    make("idle")
    out, _ = run("resume", "idle")
    assert "Resumed OneStep(idle)" in out
    assert [(r.job_class, r.key) for r in chrono_forge_env.pending] == [(ONE_STEP, "idle")]


@pytest.mark.parametrize(
    "state,hint",
    [
        ("failed", "chrono_forge retry"),
        ("stalled", "chrono_forge retry"),
        ("running", "chrono_forge reap"),
        ("completed", "nothing left"),
    ],
)
def test_resume_refuses_other_states_with_what_to_do(chrono_forge_env, state, hint):
    make("k", state)
    message = refused("resume", "k")
    assert f"is {state}" in message and hint in message
    assert chrono_forge_env.pending == []


def test_resume_refuses_a_class_that_no_longer_imports(chrono_forge_env):
    make("ghost", job_class="tests.workflows_ops.Removed")
    assert "Removed" in refused("resume", "ghost")
    assert chrono_forge_env.pending == []


def test_retry_enqueues_a_failed_workflow(chrono_forge_env):
    w.NeedsFix.perform_later("bad")
    chrono_forge_env.run_all()
    Workflow.objects.filter(key="bad").update(context={"fixed": True})
    out, _ = run("retry", "bad")
    assert "NeedsFix(bad) will be retried shortly." in out
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="bad").state == "completed"


def test_retry_now_runs_a_stalled_workflow_here(chrono_forge_env):
    w.StallsUntilFixed.perform_later("card")
    chrono_forge_env.run_all()
    w.StallsUntilFixed.FIXED = True
    out, _ = run("retry", "card", "--now")
    assert "it is now completed" in out
    assert chrono_forge_env.pending == []


@pytest.mark.parametrize(
    "state,hint",
    [
        ("idle", "chrono_forge resume"),
        ("completed", "nothing to retry"),
        ("running", "nothing to retry"),
    ],
)
def test_retry_refuses_other_states(chrono_forge_env, state, hint):
    make("k", state)
    message = refused("retry", "k")
    assert f"is {state}" in message and hint in message
    assert chrono_forge_env.pending == []


def test_retry_refuses_a_missing_workflow():
    assert "No workflow with key 'ghost'" in refused("retry", "ghost")


# -- reap / resume-overdue -------------------------------------------------------------------------
def test_reap(chrono_forge_env):
    now = chrono_forge_env.now
    make("old", "running", locked_by="x", locked_at=now - timedelta(minutes=40))
    make("young", "running", locked_by="x", locked_at=now - timedelta(minutes=20))
    assert "Re-enqueued 1 stranded workflow(s)" in run("reap")[0]
    chrono_forge_env.drop_pending()
    assert "Re-enqueued 2 stranded" in run("reap", "--stale-after", "10")[0]
    assert "--stale-after" in refused("reap", "--stale-after", "soon")


def test_resume_overdue(chrono_forge_env):
    now = chrono_forge_env.now
    make("late", next_run_at=now - timedelta(minutes=10))
    make("slightly", next_run_at=now - timedelta(minutes=2))
    assert "Re-enqueued 1 overdue workflow(s)" in run("resume-overdue")[0]
    chrono_forge_env.drop_pending()
    assert "Re-enqueued 2 overdue" in run("resume-overdue", "--grace", "1")[0]
    assert "--grace" in refused("resume-overdue", "--grace", "-1")


# -- cleanup ---------------------------------------------------------------------------------------
def old_workflows(env, count, days=100):
    for i in range(count):
        wf = make(f"old{i}", "completed", completed_at=env.now - days * DAY)
        ExecutionLog.objects.create(workflow=wf, step_name="durably_execute$x", state="completed")


def test_cleanup_deletes_and_reports(chrono_forge_env):
    old_workflows(chrono_forge_env, 3)
    make("recent", "completed", completed_at=chrono_forge_env.now - 10 * DAY)
    out, err = run("cleanup")
    assert (
        out.strip()
        == "Deleted 3 workflow(s), 3 execution log(s), 0 error log(s), 0 repetition log(s), "
        "0 message(s)."
    )
    assert err == ""  # one batch: no progress bar
    assert list(Workflow.objects.values_list("key", flat=True)) == ["recent"]
    assert "Deleted 1 workflow(s)" in run("cleanup", "--older-than", "5")[0]


def test_cleanup_dry_run_and_per_state_windows(chrono_forge_env):
    old_workflows(chrono_forge_env, 2, days=20)
    make("f", "failed", modified=chrono_forge_env.now - 20 * DAY)
    out, _ = run("cleanup", "--completed-older-than", "10", "--dry-run")
    assert out.startswith("Would delete 2 workflow(s), 2 execution log(s)")
    assert Workflow.objects.count() == 3
    assert run("cleanup", "--failed-older-than", "10")[0].startswith("Deleted 1 workflow(s)")
    assert not Workflow.objects.filter(key="f").exists()


def test_cleanup_prunes_repetitions_when_asked(chrono_forge_env):
    now = chrono_forge_env.now
    wf = make("rep", "running")
    ExecutionLog.objects.create(
        workflow=wf,
        step_name="durably_repeat$t",
        state="pending",
        metadata={"last_execution_at": now.isoformat()},
    )
    ExecutionLog.objects.create(
        workflow=wf,
        step_name=f"durably_repeat$t${int((now - 9 * DAY).timestamp())}",
        state="completed",
    )
    assert "0 repetition log(s)" in run("cleanup")[0]
    assert "1 repetition log(s)" in run("cleanup", "--prune-repetitions-older-than", "7")[0]


def test_cleanup_draws_a_progress_bar_on_stderr_for_long_runs(chrono_forge_env):
    old_workflows(chrono_forge_env, 5)
    out, err = run("cleanup", "--batch-size", "2")
    assert "Deleted 5 workflow(s)" in out
    assert err.count("\r") == 3 and err.endswith("] 5/5\n")
    assert "workflows    [" in err and "#" * 30 in err


def test_cleanup_without_progress_bar(chrono_forge_env):
    old_workflows(chrono_forge_env, 5)
    _, err = run("cleanup", "--batch-size", "2", "--no-progress")
    assert err == ""


@pytest.mark.parametrize(
    "args", [("--older-than", "-1"), ("--batch-size", "0"), ("--older-than", "ninety")]
)
def test_cleanup_refuses_bad_options(chrono_forge_env, args):
    old_workflows(chrono_forge_env, 1)
    refused("cleanup", *args)
    assert Workflow.objects.count() == 1


# -- maintenance -----------------------------------------------------------------------------------
def schedules():
    return {
        s.name: (s.func, s.schedule_type, s.minutes, s.cluster, s.repeats)
        for s in Schedule.objects.filter(name__startswith=maintenance.SCHEDULE_PREFIX)
    }


def test_maintenance_install_is_idempotent(chrono_forge_env):
    out, _ = run("maintenance", "--install")
    assert out.count("Created schedule") == 3
    first = schedules()
    assert first == {
        "chrono_forge:maintenance:reap": ("chrono_forge.maintenance.reap", "I", 5, None, -1),
        "chrono_forge:maintenance:resume-overdue": (
            "chrono_forge.maintenance.resume_overdue",
            "I",
            5,
            None,
            -1,
        ),
        "chrono_forge:maintenance:cleanup": (
            "chrono_forge.maintenance.cleanup",
            "D",
            None,
            None,
            -1,
        ),
    }
    out, _ = run("maintenance", "--install")
    assert out.count("Updated schedule") == 3 and schedules() == first
    assert Schedule.objects.count() == 3


def test_maintenance_reinstall_keeps_an_operators_timing_and_arguments(settings):
    run("maintenance", "--install")
    Schedule.objects.filter(name="chrono_forge:maintenance:cleanup").update(
        schedule_type="W", kwargs="{'older_than_days': 30}", func="old.path"
    )
    settings.CHRONO_FORGE = {"MAINTENANCE_CLUSTER": "housekeeping"}
    run("maintenance", "--install")
    cleanup = Schedule.objects.get(name="chrono_forge:maintenance:cleanup")
    assert (cleanup.schedule_type, cleanup.kwargs) == ("W", "{'older_than_days': 30}")
    assert (cleanup.func, cleanup.cluster) == ("chrono_forge.maintenance.cleanup", "housekeeping")


def test_maintenance_install_uses_the_maintenance_cluster(settings):
    settings.CHRONO_FORGE = {"MAINTENANCE_CLUSTER": "housekeeping"}
    out, _ = run("maintenance", "--install")
    assert "(cluster housekeeping)" in out
    assert {v[3] for v in schedules().values()} == {"housekeeping"}


def test_maintenance_uninstall():
    run("maintenance", "--install")
    Schedule.objects.create(name="someone-else", func="x.y")
    assert "Removed 3" in run("maintenance", "--uninstall")[0]
    assert list(Schedule.objects.values_list("name", flat=True)) == ["someone-else"]
    assert "Removed 0" in run("maintenance", "--uninstall")[0]


def test_maintenance_requires_exactly_one_action():
    assert "--install" in refused("maintenance")
    assert "not allowed with" in refused("maintenance", "--install", "--uninstall")


def test_scheduled_functions_do_what_the_commands_do(chrono_forge_env):
    now = chrono_forge_env.now
    make("stale", "running", locked_by="x", locked_at=now - timedelta(minutes=40))
    make("late", next_run_at=now - timedelta(minutes=10))
    assert maintenance.reap() == 1
    assert maintenance.reap(stale_after_minutes=60) == 0
    assert maintenance.resume_overdue() == 1
    assert maintenance.resume_overdue(grace_minutes=15) == 0
    assert sorted(r.key for r in chrono_forge_env.pending) == ["late", "stale"]


def test_installed_schedules_call_the_maintenance_functions(chrono_forge_env):
    """What django-q2's scheduler will do: import ``func`` and call it with the literal kwargs."""
    import ast

    from django.utils.module_loading import import_string

    make("stale", "running", locked_by="x", locked_at=chrono_forge_env.now - timedelta(minutes=40))
    run("maintenance", "--install")
    results = {
        s.name.rsplit(":", 1)[1]: import_string(s.func)(**ast.literal_eval(s.kwargs or "{}"))
        for s in Schedule.objects.order_by("pk")
    }
    assert results == {
        "reap": 1,
        "resume-overdue": 0,
        "cleanup": {
            "workflows": 0,
            "execution_logs": 0,
            "error_logs": 0,
            "repetition_logs": 0,
            "messages": 0,
        },
    }
