"""The task entry points refuse a payload chrono_forge cannot have written: one log line, no
exception for django-q2 to record or redeliver, no database access, no import."""

from __future__ import annotations

import logging
import math
import sys

import pytest

from chrono_forge import tasks
from chrono_forge.models import ErrorLog, Workflow
from tests import workflows_core as w

pytestmark = pytest.mark.django_db

JOB = w.Counter.job_class()
LONG_PATH = ".".join(["tests"] + ["x"] * 3999)
DUE = "2026-12-01T10:00:00+00:00"


def refused(caplog, django_assert_num_queries, call):
    """Run ``call``; assert it touched no table, imported nothing and logged exactly one error."""
    modules = set(sys.modules)
    caplog.clear()
    with django_assert_num_queries(0):
        result = call()
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    assert record.name == "chrono_forge" and record.levelno == logging.ERROR
    assert record.exc_info is None  # no traceback
    message = record.getMessage()
    assert "refused a" in message and "malformed payload" in message
    assert len(message) < 1000  # bounded, whatever the payload's size
    assert set(sys.modules) == modules
    return result, message


RUN_PAYLOADS = [
    pytest.param((".", "k"), {}, "not a dotted path", id="dot"),
    pytest.param(("nodots", "k"), {}, "not a dotted path", id="no-dots"),
    pytest.param(("tests..x", "k"), {}, "not a dotted path", id="empty-part"),
    pytest.param(("tests.tripwire.Trip wire", "k"), {}, "not a dotted path", id="space"),
    pytest.param((LONG_PATH, "k"), {}, "longer than any stored class path", id="4000-parts"),
    pytest.param((123, "k"), {}, "job_class must be a str", id="int-class"),
    pytest.param((None, "k"), {}, "job_class must be a str", id="none-class"),
    pytest.param((b"tests.x", "k"), {}, "job_class must be a str", id="bytes-class"),
    pytest.param((JOB, 5), {}, "key must be a str", id="int-key"),
    pytest.param((JOB, ""), {}, "is not a workflow key", id="empty-key"),
    pytest.param((JOB, "k" * 256), {}, "is not a workflow key", id="long-key"),
    pytest.param((JOB, "a\x00b"), {}, "is not a workflow key", id="nul-key"),
    pytest.param((JOB,), {}, "missing argument(s) ['key']", id="no-key"),
    pytest.param((), {}, "missing argument(s) ['job_class', 'key']", id="no-args"),
    pytest.param(
        (JOB, "k", 0, None, False, None, None, 1.0, None, False, "x"),
        {},
        "at most 10",
        id="extra-arg",
    ),
    pytest.param((JOB, "k"), {"job_class": JOB}, "given twice", id="twice"),
    pytest.param((JOB, "k"), {"evil": 1}, "unknown argument(s): ['evil']", id="unknown-kwarg"),
    pytest.param((JOB, "k"), {"hook": "os.system"}, "unknown argument(s)", id="q-option"),
    pytest.param((JOB, "k"), {"attempt": "1"}, "attempt must be an int", id="str-attempt"),
    pytest.param((JOB, "k"), {"attempt": -1}, "attempt must be an int", id="negative-attempt"),
    pytest.param((JOB, "k"), {"attempt": True}, "attempt must be an int", id="bool-attempt"),
    pytest.param((JOB, "k"), {"attempt": 1.5}, "attempt must be an int", id="float-attempt"),
    pytest.param((JOB, "k"), {"attempt": 10**30}, "attempt must be an int", id="huge-attempt"),
    pytest.param((JOB, "k"), {"retry_counts": [1]}, "retry_counts must be", id="list-counts"),
    pytest.param((JOB, "k"), {"retry_counts": {1: 2}}, "not a short str", id="int-key-counts"),
    pytest.param((JOB, "k"), {"retry_counts": {"a": "b"}}, "retry_counts['a']", id="str-count"),
    pytest.param(
        (JOB, "k"), {"retry_counts": {str(i): 1 for i in range(101)}}, "at most 100", id="many"
    ),
    pytest.param((JOB, "k"), {"retry_workflow": "yes"}, "must be a bool", id="str-retry"),
    pytest.param((JOB, "k"), {"token": "garbage"}, "token must be", id="garbage-token"),
    pytest.param((JOB, "k"), {"token": 123}, "token must be", id="int-token"),
    pytest.param((JOB, "k"), {"token": "2026-12-01T10:00:00"}, "token must be", id="naive-token"),
    pytest.param((JOB, "k"), {"token": DUE + "x" * 64}, "token must be", id="long-token"),
    pytest.param((JOB, "k"), {"wait_condition": 7}, "wait_condition must be", id="int-condition"),
    pytest.param((JOB, "k"), {"stale_after": 0}, "stale_after must be", id="zero-stale-after"),
    pytest.param((JOB, "k"), {"stale_after": math.nan}, "stale_after must be", id="nan-stale"),
    pytest.param((JOB, "k"), {"stale_after": "60"}, "stale_after must be", id="str-stale-after"),
]


@pytest.mark.parametrize(("args", "kwargs", "reason"), RUN_PAYLOADS)
def test_run_workflow_refuses_a_malformed_payload_with_one_log_line(
    chrono_forge_env, caplog, django_assert_num_queries, args, kwargs, reason
):
    result, message = refused(
        caplog, django_assert_num_queries, lambda: tasks.run_workflow(*args, **kwargs)
    )
    assert result is None
    assert reason in message
    assert w.CALLS == {} and chrono_forge_env.pending == []


def test_a_refused_payload_leaves_an_existing_workflow_alone(chrono_forge_env, caplog):
    wf = w.Counter.perform_later("k")
    chrono_forge_env.drop_pending()
    tasks.run_workflow(JOB, "k", token="not a date")
    tasks.run_workflow(JOB, "k", attempt=-5)
    wf.refresh_from_db()
    assert (wf.state, wf.started_at) == ("idle", None) and not ErrorLog.objects.exists()
    assert w.calls("Counter.perform") == 0
    tasks.run_workflow(JOB, "k")  # a well-formed delivery still runs it
    wf.refresh_from_db()
    assert wf.state == "completed"


def test_every_argument_chrono_forge_sends_is_accepted(chrono_forge_env):
    wf = w.Counter.perform_later("k")
    chrono_forge_env.drop_pending()
    tasks.run_workflow(
        JOB,
        "k",
        attempt=0,
        retry_counts={"builtins.ValueError": 1},
        retry_workflow=False,
        stale_after=60.0,
    )
    wf.refresh_from_db()
    assert wf.state == "completed"


@pytest.mark.parametrize(
    "job_class",
    [
        "tests.workflows_core.DoesNotExist",
        "tests.no_such_module.Workflow",
        "tests.workflows_core.NotAWorkflow",
        "tests.workflows_core.a_function",
        "chrono_forge.workflow.DurableWorkflow",
        "os.path",
        "builtins.dict",
    ],
)
def test_a_well_formed_path_that_is_not_registered_is_one_log_line(
    chrono_forge_env, caplog, job_class
):
    modules = set(sys.modules)
    assert tasks.run_workflow(job_class, "k") is None
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None
    assert "is not a registered workflow class" in records[0].getMessage()
    assert set(sys.modules) == modules
    assert Workflow.objects.count() == 0 and chrono_forge_env.pending == []


# -- poll_merge --------------------------------------------------------------------------------
PARENT = "tests.workflows_branches.Parent"
POLL_PAYLOADS = [
    pytest.param((PARENT, "p", [], "t"), {}, "branch_log_ids must be a list", id="empty-ids"),
    pytest.param((PARENT, "p", "1", "t"), {}, "branch_log_ids must be a list", id="str-ids"),
    pytest.param((PARENT, "p", (1,), "t"), {}, "branch_log_ids must be a list", id="tuple-ids"),
    pytest.param((PARENT, "p", [True], "t"), {}, "branch_log_ids item", id="bool-id"),
    pytest.param((PARENT, "p", [[1]], "t"), {}, "branch_log_ids item", id="nested-id"),
    pytest.param((PARENT, "p", [1.5], "t"), {}, "branch_log_ids item", id="float-id"),
    pytest.param((PARENT, "p", list(range(1000)), "t"), {}, "1 to 255", id="1000-ids"),
    pytest.param((PARENT, "p", [1], None), {}, "token must be", id="none-token"),
    pytest.param((PARENT, "p", [1], 5), {}, "token must be", id="int-token"),
    pytest.param((".", "p", [1], "t"), {}, "not a dotted path", id="dot-class"),
    pytest.param((LONG_PATH, "p", [1], "t"), {}, "longer than", id="4000-parts"),
    pytest.param((PARENT, 5, [1], "t"), {}, "key must be a str", id="int-key"),
    pytest.param((PARENT, "p", [1], "t", math.nan), {}, "min_interval", id="nan-interval"),
    pytest.param((PARENT, "p", [1], "t", math.inf), {}, "min_interval", id="inf-interval"),
    pytest.param((PARENT, "p", [1], "t", "5"), {}, "min_interval", id="str-interval"),
    pytest.param((PARENT, "p", [1], "t", -1), {}, "min_interval", id="negative-interval"),
    pytest.param((PARENT, "p", [1], "t", 10, 5), {}, "exceeds max_interval", id="low-gt-high"),
    pytest.param((PARENT, "p", [1], "t"), {"max_interval": 1e300}, "max_interval", id="huge"),
    pytest.param((PARENT, "p", [1], "t"), {"merge_log_id": 1.5}, "merge_log_id", id="float-id"),
    pytest.param((PARENT, "p", [1], "t"), {"attempt": "x"}, "attempt must be", id="str-attempt"),
    pytest.param((PARENT, "p", [1], "t"), {"evil": 1}, "unknown argument(s)", id="unknown"),
    pytest.param((PARENT, "p", [1]), {}, "missing argument(s) ['token']", id="no-token"),
    # the current form: poll_merge(merge_log_id, token, *, attempt=0)
    pytest.param((None, "t"), {}, "merge_log_id must be", id="none-merge-log"),
    pytest.param((True, "t"), {}, "merge_log_id must be", id="bool-merge-log"),
    pytest.param((1.5, "t"), {}, "merge_log_id must be", id="float-merge-log"),
    pytest.param((1, None), {}, "token must be", id="new-none-token"),
    pytest.param((1,), {}, "missing argument(s) ['token']", id="new-no-token"),
    pytest.param((1, "t"), {"min_interval": 5}, "unknown argument(s)", id="new-interval"),
    pytest.param((1, "t"), {"attempt": -1}, "attempt must be", id="new-negative-attempt"),
]


@pytest.mark.parametrize(("args", "kwargs", "reason"), POLL_PAYLOADS)
def test_poll_merge_refuses_a_malformed_payload_with_one_log_line(
    chrono_forge_env, caplog, django_assert_num_queries, args, kwargs, reason
):
    result, message = refused(
        caplog, django_assert_num_queries, lambda: tasks.poll_merge(*args, **kwargs)
    )
    assert result == "refused"
    assert reason in message
    assert chrono_forge_env.pending == []
