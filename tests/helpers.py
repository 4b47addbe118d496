"""Small helpers shared by the tests (import them; conftest.py holds only fixtures and hooks)."""

import time


def wait_for(predicate, timeout, interval=0.05, message=None):
    """Poll ``predicate()`` until it returns something truthy, and return that value.

    Raises ``AssertionError`` after ``timeout`` seconds. Tests use this instead of fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def flash(response) -> list[str]:
    """The admin messages this request added (not older ones still waiting in the session)."""
    return [str(m) for m in response.wsgi_request._messages._queued_messages]


#: The workflow whose step body takes its worker down (tests.workflows_poison.DyingStep).
DYING = "tests.workflows_poison.DyingStep"


def pass_in_a_process_that_dies(key: str) -> int:
    """Run one pass of ``DyingStep(key)`` through the worker entry point in a child process joined
    to the test database; its body calls ``os._exit(1)``. Returns the child's exit code."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.db import connection

    repo_root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env.update(
        CHRONO_FORGE_TEST_DB=connection.vendor.replace("postgresql", "postgres"),
        CHRONO_FORGE_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        PYTHONPATH=os.pathsep.join(p for p in (str(repo_root), os.environ.get("PYTHONPATH")) if p),
    )
    script = (
        "import django; django.setup(); import tests.workflows_poison; "
        "from chrono_forge.tasks import run_workflow; "
        f"run_workflow({DYING!r}, {key!r})"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, env=env, capture_output=True, timeout=60
    )
    return child.returncode


def reap_and_run(env) -> int:
    """What the next pass after a dead worker sees: the reaper re-enqueues the stranded run once
    its lock is stale, and the pass takes the lock over."""
    from datetime import timedelta

    from chrono_forge import conf
    from chrono_forge.models import Workflow

    env.advance(conf.reap_stale_after() + timedelta(minutes=1))
    assert Workflow.objects.reap_stalled() == 1
    return env.run_due()
