"""Recording an error never fails: messages and tracebacks holding NUL or lone surrogates are stored
with those characters replaced, in ErrorLog and in the step's own ``error_message``, and oversized
ones are truncated to ERROR_MESSAGE_MAX_CHARS / ERROR_BACKTRACE_MAX_CHARS."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from chrono_forge.errors import storable_text
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows_api as a

pytestmark = pytest.mark.django_db

NASTY = {
    "nul": ("before\x00after", "before\\x00after"),
    "surrogate": ("file b'\\xff' is /tmp/\udcff.txt", "file b'\\xff' is /tmp/\\udcff.txt"),
    "both": ("\x00\ud800\x00", "\\x00\\ud800\\x00"),
}


def errors_of(key: str) -> list[ErrorLog]:
    return list(ErrorLog.objects.filter(workflow__key=key).order_by("pk"))


@pytest.mark.parametrize("kind", sorted(NASTY))
def test_a_step_error_with_nul_or_surrogates_is_recorded_replaced(chrono_forge_env, kind):
    message, stored = NASTY[kind]
    a.FLAGS["message"] = message
    a.RaisesNasty.perform_later("k")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get(key="k")
    step = ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$explode")
    # the policy's 2 attempts ran, no more: recording never failed and triggered retries itself
    assert a.CALLS["RaisesNasty.explode"] == 2
    assert (wf.state, step.state) == ("stalled", "failed")
    assert step.error_message == stored
    logs = errors_of("k")
    assert [log.error_message for log in logs] == [stored, stored]
    for log in logs:
        assert "\x00" not in log.backtrace and stored in log.backtrace
        log.backtrace.encode("utf-8")


@pytest.mark.parametrize("kind", sorted(NASTY))
def test_a_workflow_level_error_with_nul_or_surrogates_is_recorded(chrono_forge_env, kind):
    message, stored = NASTY[kind]
    a.FLAGS["message"] = message
    a.RaisesNastyInPerform.perform_later("k")
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="k").state == "failed"
    assert [log.error_message for log in errors_of("k")] == [stored]
    assert a.CALLS["RaisesNastyInPerform.perform"] == 1


@pytest.mark.parametrize("kind", sorted(NASTY))
def test_a_condition_error_with_nul_or_surrogates_is_recorded_on_the_step(chrono_forge_env, kind):
    message, stored = NASTY[kind]
    a.FLAGS["message"] = message
    a.ContinueIfRaises.perform_later("k")
    chrono_forge_env.run_all()
    step = ExecutionLog.objects.get(workflow__key="k", step_name="continue_if$gate")
    assert (step.state, step.error_message) == ("failed", stored)
    assert Workflow.objects.get(key="k").state == "stalled"


def test_an_exception_whose_str_raises_is_still_recorded(chrono_forge_env):
    a.RaisesUnprintable.perform_later("k")
    chrono_forge_env.run_all()
    (log,) = errors_of("k")
    assert log.error_message == "<UnprintableError: str() failed>"
    assert "UnprintableError" in log.backtrace
    assert Workflow.objects.get(key="k").state == "failed"


def test_oversized_messages_and_tracebacks_are_truncated_to_the_settings(chrono_forge_env, caplog):
    a.FLAGS["message"] = "H" * 3000 + "x" * 5_000_000 + "T" * 3000
    with override_settings(
        CHRONO_FORGE={"ERROR_MESSAGE_MAX_CHARS": 1000, "ERROR_BACKTRACE_MAX_CHARS": 2000}
    ):
        with caplog.at_level(logging.WARNING, logger="chrono_forge"):
            a.RaisesNasty.perform_later("k")
            chrono_forge_env.run_all()
    logs = errors_of("k")
    assert len(logs) == 2 and Workflow.objects.get(key="k").state == "stalled"
    for log in logs:
        assert len(log.error_message) == 1000 and len(log.backtrace) <= 2000
        assert log.error_message.startswith("HHH") and log.error_message.endswith("TTT")
        assert "5006000 characters, truncated to 1000" in log.error_message
    step = ExecutionLog.objects.get(workflow__key="k", step_name="durably_execute$explode")
    assert len(step.error_message) <= 1000
    assert max(len(record.getMessage()) for record in caplog.records) < 2000


def test_the_default_limits_are_documented_values(chrono_forge_env):
    a.FLAGS["message"] = "m" * 20_000
    a.RaisesNastyInPerform.perform_later("k")
    chrono_forge_env.run_all()
    (log,) = errors_of("k")
    assert len(log.error_message) == 10_000 and len(log.backtrace) <= 100_000


@pytest.mark.parametrize(
    "text,limit",
    [("short", 10), ("a" * 50, 10), ("a" * 500, 100), ("\x00" * 10, 5), ("é" * 10, 1)],
)
def test_storable_text_is_bounded_and_storable(text, limit):
    stored = storable_text(text, limit)
    assert len(stored) <= limit and "\x00" not in stored
    stored.encode("utf-8")
