"""A project may give chrono_forge's models UUID primary keys (``PRIMARY_KEY_FIELD``). The models
are built when Django starts, so the engine's paths that store a key inside JSON (a failure
marker's error log, a consumed message, a repetition's coordination log) run here in a pytest
subprocess under tests/settings_uuid.py, on the database of this run.

The files chosen cover those paths and do not assume that primary keys grow with insertion order
(many other tests order rows by id to state what came first, which random UUIDs do not keep)."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "tests/test_signals.py",  # a workflow-level error fails the run: the failure marker
    "tests/test_core_lock.py",  # a failed run's marker beside racing wake-ups
    "tests/test_messages_send.py",  # a consumed message's id in the receive step's metadata
    "tests/test_messages_receive.py",  # a topic's messages consumed oldest first
    "tests/test_messages_send_to.py",  # a sent message's id as the send_to step's result
    "tests/test_waits_bad_input.py",  # durably_repeat's repetition logs point at their task
    "tests/test_step_writes.py",  # the step INSERT/UPDATE written as SQL, against the ORM
]


def test_the_engine_runs_with_uuid_primary_keys(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "CHRONO_FORGE_TEST_DB_NAME"}
    # Its own test database beside this run's (PostgreSQL: another name; SQLite: another pid).
    env["CHRONO_FORGE_PG_NAME"] = f"chrono_forge_uuid_{os.getpid()}"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--ds=tests.settings_uuid", "-q", "-p", "no:cacheprovider",
         "-m", "not e2e", *FILES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1] and "failed" not in result.stdout
