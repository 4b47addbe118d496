"""durably_execute, step retries and the workflow lifecycle."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chrono_forge import clock, conf
from chrono_forge.exceptions import InvalidStepName, WorkflowNotRetryableError
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_core as w
from tests.core_sql import EXECUTION_LOG, SqlLog

pytestmark = pytest.mark.django_db


def step_names(wf: Workflow) -> list[str]:
    return list(wf.execution_logs.order_by("id").values_list("step_name", flat=True))


def log(wf: Workflow, name: str) -> ExecutionLog:
    return wf.execution_logs.get(step_name=name)


# -- kitchen sink lite -----------------------------------------------------------------------------
def test_happy_path_stores_identity_kwargs_options_and_context(chrono_forge_env):
    wf = w.LiteSink.perform_later("sink", kwarg="durable", options={"option1": 1})
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert (wf.job_class, wf.key) == ("tests.workflows_core.LiteSink", "sink")
    assert wf.kwargs == {"kwarg": "durable"}
    assert wf.options == {"option1": 1}
    assert set(wf.context) == {"order_id", "processed_at", "completed_at"}
    assert wf.started_at is not None and wf.completed_at is not None
    assert wf.locked_at is None and wf.locked_by is None
    assert step_names(wf) == [
        "durably_execute$process_order",
        "durably_execute$complete_order",
        "$workflow_completion$",
    ]
    assert ErrorLog.objects.count() == 0


def test_transient_error_before_a_step_is_retried_without_duplicate_logs(chrono_forge_env):
    w.FLAGS["glitch_process_order"] = True
    wf = w.LiteSink.perform_later("glitch")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert step_names(wf) == [
        "durably_execute$process_order",
        "durably_execute$complete_order",
        "$workflow_completion$",
    ]
    assert list(ErrorLog.objects.values_list("error_class", flat=True)) == [
        "tests.workflows_core.TransientError"
    ]


def test_two_transient_errors_still_complete(chrono_forge_env):
    w.FLAGS.update(glitch_process_order=True, glitch_complete_order=True)
    wf = w.LiteSink.perform_later("glitch2")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    classes = set(ErrorLog.objects.values_list("error_class", flat=True))
    assert ErrorLog.objects.count() == 2 and classes == {"tests.workflows_core.TransientError"}


def test_permanent_failure_fails_after_ten_workflow_attempts(chrono_forge_env):
    wf = w.LiteSink.perform_later("perm", fail_after_process=True)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "failed"
    assert wf.completed_at is None
    assert "processed_at" in wf.context and "completed_at" not in wf.context
    assert wf.locked_by is None and wf.locked_at is None
    names = step_names(wf)
    assert names[0] == "durably_execute$process_order" and len(names) == 2
    assert names[1].startswith("$workflow_failure$")
    errors = ErrorLog.objects.filter(workflow=wf)
    assert errors.count() == 10
    assert set(errors.values_list("error_message", flat=True)) == {"Permanent Failure"}
    assert w.calls("LiteSink.process_order") == 1  # completed steps are never re-run
    assert chrono_forge_env.pending == []
    # ISO-8601 context timestamps parse back as datetimes
    assert isinstance(datetime.fromisoformat(wf.context["processed_at"]), datetime)


def test_a_step_that_raises_execution_failed_stalls_the_workflow(chrono_forge_env):
    wf = w.StepRaisesExecutionFailed.perform_later("stall")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "stalled" and wf.completed_at is None
    assert wf.context == {"before_step": "kept"}
    assert "chrono_forge.exceptions.ExecutionFailedError" in set(
        ErrorLog.objects.values_list("error_class", flat=True)
    )
    assert log(wf, "durably_execute$explode").state == "failed"
    assert chrono_forge_env.pending == []


def test_context_api_inside_perform(chrono_forge_env):
    wf = w.ContextApi.perform_later("ctx")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert w.FLAGS["first_set_once"] is True and w.FLAGS["second_set_once"] is False
    assert w.FLAGS["has_once"] is True and w.FLAGS["has_missing"] is False
    assert w.FLAGS["get_default"] == "fallback" and w.FLAGS["missing_raises"] is True
    assert wf.context == {
        "bracket": "via []",
        "via_set": 1,
        "once": "first",
        "a_list": [1, "two", {"three": 3}],
        "a_dict": {"1": "str key", "nested": {"true": "str key"}},
    }
    assert w.FLAGS["int_key_refused"] is True  # refused, not turned into "1"


def test_a_pre_locked_workflow_is_not_run_until_unlocked(chrono_forge_env):
    wf = w.Counter.perform_later("dup")
    chrono_forge_env.drop_pending()
    Workflow.objects.filter(pk=wf.pk).update(
        locked_by="fake_job_id", locked_at=clock.now(), state="running"
    )
    w.Counter.perform_later("dup")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert w.calls("Counter.count") == 0 and "count" not in str(wf.context)
    assert wf.locked_by == "fake_job_id" and wf.state == "running"

    wf.force_unlock()
    assert (wf.state, wf.locked_by, wf.locked_at) == ("idle", None, None)
    w.Counter.perform_later("dup")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert w.calls("Counter.count") == 1
    assert wf.state == "completed" and wf.locked_by is None


def test_retry_later_after_failure_with_fixed_context(chrono_forge_env):
    wf = w.LiteSink.perform_later("fix", fail_after_process=True)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "failed"
    Workflow.objects.filter(pk=wf.pk).update(context={**wf.context, "fixed": True})
    w.LiteSink.retry_later("fix")
    assert len(chrono_forge_env.pending) == 1
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["fixed"] is True and "completed_at" in wf.context
    retry_logs = wf.execution_logs.filter(step_name__startswith="$workflow_retry$")
    assert retry_logs.count() == 1 and retry_logs.get().state == "completed"
    ts = int(retry_logs.get().step_name.rsplit("$", 1)[1])
    assert abs(ts - clock.now().timestamp()) < 5


def test_retry_now_after_stall(chrono_forge_env):
    wf = w.StepRaisesExecutionFailed.perform_later("restall")
    chrono_forge_env.run_all()
    assert Workflow.objects.get(pk=wf.pk).state == "stalled"
    w.FLAGS["fixed"] = True
    w.StepRaisesExecutionFailed.retry_now("restall")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context == {"before_step": "kept", "after_step": True}
    step = log(wf, "durably_execute$explode")
    assert step.state == "completed" and step.result == "fixed"
    assert wf.execution_logs.get(step_name__startswith="$workflow_retry$").state == "completed"


def test_retry_now_on_a_completed_workflow_raises_and_writes_nothing(chrono_forge_env):
    wf = w.OneStep.perform_later("done")
    chrono_forge_env.run_all()
    before = step_names(Workflow.objects.get(pk=wf.pk))
    with pytest.raises(WorkflowNotRetryableError):
        w.OneStep.retry_now("done")
    with pytest.raises(WorkflowNotRetryableError):
        w.OneStep.retry_later("done")
    assert step_names(Workflow.objects.get(pk=wf.pk)) == before
    assert chrono_forge_env.pending == []


# -- durably_execute and step retries --------------------------------------------------------------
def test_per_call_policy_caps_attempts(chrono_forge_env):
    wf = w.AlwaysFailsPerCall.perform_later("k")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    step = log(wf, "durably_execute$always_fails")
    assert (step.attempts, step.state) == (2, "failed")
    assert wf.state == "stalled" and w.calls("always_fails") == 2


def test_class_policy_is_the_step_default(chrono_forge_env):
    wf = w.AlwaysFailsClassPolicy.perform_later("k")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert log(wf, "durably_execute$always_fails").attempts == 2
    assert wf.state == "stalled"


def test_builtin_step_default_is_three_attempts_with_one_error_log_each(chrono_forge_env):
    wf = w.AlwaysFails.perform_later("k")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "stalled"
    errors = ErrorLog.objects.filter(workflow=wf).order_by("id")
    assert list(errors.values_list("attempt", flat=True)) == [1, 2, 3]
    assert set(errors.values_list("step_name", flat=True)) == {"durably_execute$always_fails"}
    assert set(errors.values_list("error_class", flat=True)) == {
        "tests.workflows_core.TransientError"
    }
    step = log(wf, "durably_execute$always_fails")
    assert (
        step.error_class == "tests.workflows_core.TransientError" and step.error_message == "nope"
    )


def test_a_fresh_step_records_its_attempt_in_the_insert(chrono_forge_env):
    wf = w.OneStep.perform_later("fresh")
    with SqlLog() as sql:
        chrono_forge_env.run_all()
    step = log(wf, "durably_execute$work")
    assert step.attempts == 1 and step.state == "completed" and step.result == {"ok": True}
    updates = sql.of("UPDATE", EXECUTION_LOG)
    assert len(updates) == 1, sql.dump()
    assert '"attempts"' not in updates[0].sql  # no attempt-only UPDATE: the INSERT recorded it


def test_a_retried_step_bumps_its_attempts(chrono_forge_env):
    wf = w.FlakyOnce.perform_later("flaky")
    with SqlLog() as sql:
        chrono_forge_env.run_all()
    step = log(wf, "durably_execute$flaky")
    assert (step.attempts, step.state, step.result) == (2, "completed", "ok")
    assert any('"attempts"' in s.sql for s in sql.of("UPDATE", EXECUTION_LOG)), sql.dump()


def test_a_completed_step_is_never_re_executed_and_replay_returns_its_stored_result(
    chrono_forge_env,
):
    wf = w.ReplayProbe.perform_later("replay")
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    assert w.calls("ReplayProbe.perform") == 3 and w.calls("ReplayProbe.first") == 1
    stored = log(wf, "durably_execute$first").result
    assert wf.context["results"] == [stored, [2]]  # the replayed value is the stored one, unchanged


class HardKill(BaseException):
    """A simulated hard kill: nothing after it runs (no release, no publish)."""


def test_at_least_once_a_kill_between_side_effect_and_completed_write_reruns_the_step(
    chrono_forge_env, monkeypatch
):
    from chrono_forge import steps
    from chrono_forge.executor import Pass

    original_complete, original_finish = steps.StepLogs.complete_later, Pass.finish

    def complete_later(self, log, **fields):  # the step's side effect is done; its write is not
        if fields.get("state") == steps.COMPLETED and not w.FLAGS.get("killed"):
            w.FLAGS["killed"] = True
            raise HardKill()
        return original_complete(self, log, **fields)

    def finish(self):
        if w.FLAGS.get("killed") and not w.FLAGS.get("finished_once"):
            w.FLAGS["finished_once"] = True
            return  # the process is gone: the lock stays, nothing is published
        original_finish(self)

    monkeypatch.setattr(steps.StepLogs, "complete_later", complete_later)
    monkeypatch.setattr(Pass, "finish", finish)
    wf = w.SideEffect.perform_later("kill")
    with pytest.raises(HardKill):
        chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "running" and wf.locked_by and w.calls("SideEffect.charge") == 1

    chrono_forge_env.advance(conf.reap_stale_after() + timedelta(minutes=1))
    assert Workflow.objects.reap_stalled() == 1
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.locked_by is None
    assert w.calls("SideEffect.charge") == 2  # at-least-once, documented: the side effect ran again
    assert log(wf, "durably_execute$charge").attempts == 2


# -- step-name validation --------------------------------------------------------------------------
def test_a_dollar_in_a_step_name_fails_fast_through_perform_now(chrono_forge_env):
    with pytest.raises(InvalidStepName, match=r"bad\$name"):
        w.NamedStep.perform_now("bad", name="bad$name")
    wf = Workflow.objects.get(key="bad")
    assert wf.state == "stalled"
    assert w.calls("NamedStep.work") == 0
    assert (
        ErrorLog.objects.filter(
            workflow=wf, error_class="chrono_forge.exceptions.InvalidStepName"
        ).count()
        == 1
    )
    assert chrono_forge_env.pending == []  # not retried
    assert wf.execution_logs.count() == 0


@pytest.mark.parametrize("name", ["", 42])
def test_empty_or_non_string_step_names_are_invalid(chrono_forge_env, name):
    with pytest.raises(InvalidStepName):
        w.NamedStep.perform_now(f"bad-{name!r}", name=name)


def test_a_nul_in_a_step_name_is_invalid():
    from chrono_forge.validation import step_name

    with pytest.raises(InvalidStepName, match="NUL"):
        step_name("durably_execute", "nul\x00")


def test_an_overlong_step_name_is_invalid(chrono_forge_env):
    with pytest.raises(InvalidStepName, match="longer than 255"):
        w.NamedStep.perform_now("long", name="n" * 250)


def test_a_valid_step_name_is_accepted(chrono_forge_env):
    wf = w.NamedStep.perform_now("good", name="valid_name")
    assert wf.state == "completed"
    assert step_names(wf) == ["durably_execute$valid_name", "$workflow_completion$"]
