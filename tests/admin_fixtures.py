"""Rows for the admin tests, written directly (the admin only reads what the primitives store)."""

from __future__ import annotations

import itertools
from datetime import timedelta

from chrono_forge import clock
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow

_keys = itertools.count(1)
QUICK = "tests.workflows_admin.Quick"
FLAKY = "tests.workflows_admin.FlakyCharge"


def make_workflow(
    state="completed", *, job_class=QUICK, key=None, ago=timedelta(minutes=5), **fields
):
    now = clock.now()
    started = now - ago
    values = {
        "job_class": job_class,
        "key": key or f"wf-{next(_keys)}",
        "state": state,
        "started_at": started,
        "created": started,
        "modified": now,
        "completed_at": now if state == "completed" else None,
    }
    if state == "running":
        values.update(locked_by="worker-1", locked_at=now - timedelta(seconds=5))
    values.update(fields)
    if state == "completed" and "modified" not in fields:
        values["modified"] = values["completed_at"]
    return Workflow.objects.create(**values)


def make_log(
    workflow, step_name, state="completed", *, started=None, took=timedelta(seconds=2), **fields
):
    now = clock.now()
    started = started or now - timedelta(minutes=1)
    values = {
        "workflow": workflow,
        "step_name": step_name,
        "state": state,
        "attempts": 1,
        "started_at": started,
        "last_executed_at": started + took,
        "completed_at": started + took if state == "completed" else None,
        "created": started,
        "modified": started + took,
    }
    values.update(fields)
    return ExecutionLog.objects.create(**values)


def make_error(
    workflow,
    step_name=None,
    *,
    attempt=1,
    error_class="tests.workflows_admin.ChargeDeclined",
    message="card declined",
    **fields,
):
    now = clock.now()
    return ErrorLog.objects.create(
        workflow=workflow,
        step_name=step_name,
        attempt=attempt,
        error_class=error_class,
        error_message=message,
        backtrace='Traceback (most recent call last):\n  File "x.py", line 1\n' + message,
        context={},
        created=now,
        modified=now,
        **fields,
    )
