"""``manage.py chrono_forge``: bad arguments are a CommandError naming the accepted range (never a
traceback), and output into a closed pipe ends quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection

from chrono_forge.models import Workflow
from tests.conftest import REPO_ROOT, TEST_DB
from tests.test_ops_command import make, refused, run

pytestmark = pytest.mark.django_db

LONGEST_MINUTES = "5.256e+07"  # 100 years
LONGEST_DAYS = "36500"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "-1", "abc", "5.3e7"])
@pytest.mark.parametrize(
    "sub, option",
    [("reap", "--stale-after"), ("resume-overdue", "--grace")],
)
def test_minute_options_refuse_what_is_not_a_duration(sub, option, value):
    message = refused(sub, f"{option}={value}")
    assert f"expected a number of minutes from 0 to {LONGEST_MINUTES}, got {value!r}" in message
    assert option in message


@pytest.mark.parametrize("value", ["nan", "inf", "1e10", "36501", "-0.5", "ninety"])
@pytest.mark.parametrize(
    "option",
    [
        "--older-than",
        "--completed-older-than",
        "--failed-older-than",
        "--prune-repetitions-older-than",
    ],
)
def test_day_options_refuse_what_is_not_a_duration(option, value):
    message = refused("cleanup", f"{option}={value}")
    assert f"expected a number of days from 0 to {LONGEST_DAYS}, got {value!r}" in message


@pytest.mark.parametrize("value", [str(10**20), "0", "-3", "1.5", "lots"])
@pytest.mark.parametrize("sub, option", [("list", "--limit"), ("cleanup", "--batch-size")])
def test_integer_options_are_bounded(sub, option, value):
    message = refused(sub, f"{option}={value}")
    assert f"expected an integer from 1 to 100000, got {value!r}" in message


def test_the_edges_of_every_range_are_accepted():
    make("edge", "completed")
    assert "Re-enqueued 0" in run("reap", "--stale-after", LONGEST_MINUTES)[0]
    assert "Re-enqueued 0" in run("resume-overdue", "--grace", "0")[0]
    out, _ = run("cleanup", "--older-than", LONGEST_DAYS, "--dry-run", "--no-progress")
    assert "Would delete 0 workflow(s)" in out
    assert "edge" in run("list", "--limit", "100000")[0]


@pytest.mark.parametrize(
    "args",
    [
        ("show", "bad\0key"),
        ("resume", "bad\0key"),
        ("retry", "bad\0key"),
        ("show", "key", "--class", "a.B\0"),
        ("list", "--class", "\0"),
        ("graph", "tests.workflows_ops\0.OneStep"),
    ],
)
def test_a_nul_in_a_key_or_class_is_refused(args):
    assert "must not contain a NUL character" in refused(*args)


@pytest.mark.parametrize(
    "args",
    [("show", "k" * 256), ("retry", "k" * 256), ("list", "--class", "a." + "b" * 254)],
)
def test_an_over_long_key_or_class_is_refused(args):
    assert "expected at most 255 characters, got 256" in refused(*args)


def test_the_longest_key_is_looked_up_not_refused():
    make("k" * 255)
    assert "k" * 255 in run("show", "k" * 255)[0]


def test_bad_arguments_exit_with_usage_and_no_traceback_from_the_command_line():
    result = manage("chrono_forge", "reap", "--stale-after", "nan")
    assert result.returncode == 2
    assert "expected a number of minutes from 0 to" in result.stderr
    assert "Traceback" not in result.stderr


# -- a closed pipe --------------------------------------------------------------------------------
def subprocess_env() -> dict[str, str]:
    name = str(connection.settings_dict["NAME"])
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CHRONO_FORGE_TEST_DB": TEST_DB,
        "CHRONO_FORGE_TEST_DB_NAME": name,
        "PYTHONPATH": str(REPO_ROOT),
    }


def manage(
    *args: str, settings: str = "tests.settings", **popen: object
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=REPO_ROOT,
        env={**subprocess_env(), "DJANGO_SETTINGS_MODULE": settings},
        capture_output=True,
        text=True,
        timeout=120,
        **popen,
    )


@pytest.mark.django_db(transaction=True)
def test_show_into_a_closed_pipe_exits_quietly():
    wf = make("piped", "completed")
    wf.execution_logs.create(step_name="durably_execute$step", state="completed", attempts=1)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes its first line (`| head`)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "django", "chrono_forge", "show", "piped"],
            cwd=REPO_ROOT,
            env=subprocess_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert process.stderr == ""
    assert process.returncode == 1
    # the same command into an open pipe prints the timeline (the workflow is there to show)
    shown = manage("chrono_forge", "show", "piped")
    assert shown.returncode == 0 and "durably_execute$step" in shown.stdout


def test_a_broken_pipe_on_a_stream_the_caller_passed_is_theirs():
    class Closed:
        def write(self, text):
            raise BrokenPipeError

        def flush(self):
            pass

    Workflow.objects.create(job_class="a.B", key="x")
    from django.core.management import call_command

    with pytest.raises(BrokenPipeError):
        call_command("chrono_forge", "list", stdout=Closed())


@pytest.mark.django_db(transaction=True)
def test_show_works_in_a_project_without_the_admin():
    """The command imports the page models, never chrono_forge.admin (whose import needs
    django.contrib.admin installed)."""
    wf = make("no-admin", "stalled")
    wf.execution_logs.create(
        step_name="durably_execute$charge",
        state="failed",
        attempts=2,
        error_class="GatewayError",
        error_message="declined",
    )
    wf.error_logs.create(
        step_name="durably_execute$charge",
        attempt=2,
        error_class="GatewayError",
        error_message="declined",
    )
    shown = manage("chrono_forge", "show", "no-admin", settings="tests.settings_no_admin")
    assert shown.returncode == 0, shown.stderr
    assert "stalled at execute charge (failed after 2 attempts)" in shown.stdout
    assert "x attempt 2 GatewayError: declined" in shown.stdout
