"""``manage.py chrono_forge``: the subcommands that start and find work — ``start``,
``list --state blocked``, branch children hidden unless ``--all``, ``show --full`` and
``--traceback`` — and django-q2's enqueue log lines kept off the command's output."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chrono_forge.models import ErrorLog, ExecutionLog, Workflow

pytestmark = pytest.mark.django_db

ONE_STEP = "tests.workflows_ops.OneStep"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("chrono_forge", *args, stdout=out, stderr=io.StringIO(), no_color=True)
    return out.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as info:
        run(*args)
    return str(info.value)


# -- start -----------------------------------------------------------------------------------------
def test_start_runs_perform_later_with_the_given_kwargs(chrono_forge_env):
    out = run("start", ONE_STEP, "order-7", "--kwargs", '{"value": 5}')
    row = Workflow.objects.get(key="order-7")
    assert f"Started {row} (id={row.pk})." in out
    assert (row.job_class, row.kwargs, row.state) == (ONE_STEP, {"value": 5}, "idle")
    assert row.next_run_at is not None  # born scheduled, like perform_later
    chrono_forge_env.run_all()
    row.refresh_from_db()
    assert row.state == "completed"


def test_start_accepts_a_unique_class_name_and_does_not_start_a_key_twice(chrono_forge_env):
    run("start", "GraphLinear", "once")
    out = run("start", "GraphLinear", "once", "--kwargs", '{"order_id": 9}')
    row = Workflow.objects.get(key="once")
    assert row.job_class == "tests.workflows_ops.GraphLinear"
    assert "already exists" in out and "not started again" in out
    assert row.kwargs == {}  # an existing key keeps its kwargs, as perform_later does


def test_start_asks_for_the_dotted_path_when_a_class_name_is_ambiguous():
    message = refused("start", "OneStep", "k")  # tests.workflows_core has a OneStep too
    assert "matches several classes" in message and ONE_STEP in message
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((ONE_STEP, "k", "--kwargs", "{not json"), "not valid JSON"),
        ((ONE_STEP, "k", "--kwargs", "[1, 2]"), "must be a JSON object"),
        ((ONE_STEP, "k", "--kwargs", '{"nope": 1}'), "nope"),
        ((ONE_STEP, "k", "--kwargs", '{"value": 1, "value2": 2}'), "value2"),
        (("tests.workflows_ops.Missing", "k"), "is not a registered workflow class"),
        (("Missing", "k"), "WORKFLOW_MODULES"),
        ((ONE_STEP, "bad$key"), "$"),
    ],
)
def test_start_refuses_bad_input_and_stores_nothing(chrono_forge_env, args, message):
    assert message in refused("start", *args)
    assert not Workflow.objects.exists()
    assert chrono_forge_env.pending == []


# -- list ------------------------------------------------------------------------------------------
def make(key, state="idle", **fields):
    return Workflow.objects.create(job_class=ONE_STEP, key=key, state=state, **fields)


def test_list_state_blocked_is_failed_plus_stalled():
    for key, state in [("f", "failed"), ("s", "stalled"), ("c", "completed"), ("i", "idle")]:
        make(key, state)
    keys = {line.split()[2] for line in run("list", "--state", "blocked").splitlines()[1:]}
    assert keys == {"f", "s"}


def test_list_hides_branch_children_unless_all():
    parent = make("parent", "running")
    log = ExecutionLog.objects.create(workflow=parent, step_name="branch$items", state="pending")
    make("parent/child-1", parent_execution_log=log)
    top = run("list")
    assert " parent " in top and "child-1" not in top
    assert run("list", "--top-level") == top
    every = run("list", "--all")
    assert "parent/child-1" in every and " parent " in every
    only_children = run("list", "--state", "idle")
    assert only_children.startswith("No workflows match (only branch children match: --all")


# -- show ------------------------------------------------------------------------------------------
def failed_run():
    wf = make("long", "stalled", context={"note": "x" * 500})
    ExecutionLog.objects.create(
        workflow=wf,
        step_name="durably_execute$charge",
        state="failed",
        attempts=3,
        error_class="GatewayError",
        error_message="declined: " + "y" * 300,
    )
    ErrorLog.objects.create(
        workflow=wf,
        step_name="durably_execute$charge",
        attempt=3,
        error_class="GatewayError",
        error_message="declined: " + "y" * 300,
        backtrace='Traceback (most recent call last):\n  File "shop.py", line 9\nGatewayError',
    )
    return wf


def test_show_cuts_long_values_and_says_how_to_see_them():
    failed_run()
    out = run("show", "long")
    assert "y" * 300 not in out and "x" * 500 not in out
    assert "--full shows them in full" in out
    assert 'File "shop.py"' not in out


def test_show_full_prints_values_and_messages_uncut():
    failed_run()
    out = run("show", "long", "--full")
    assert "declined: " + "y" * 300 in out and "x" * 500 in out
    assert "cut off" not in out


def test_show_traceback_prints_each_errors_recorded_traceback():
    failed_run()
    out = run("show", "long", "--traceback")
    assert "  | Traceback (most recent call last):" in out
    assert '  |   File "shop.py", line 9' in out


# -- log noise -------------------------------------------------------------------------------------
def test_enqueuing_subcommands_keep_django_q2_info_lines_off_the_output(
    caplog, django_capture_on_commit_callbacks
):
    """The real django-q2 dispatcher (no test env): its enqueue logs "Enqueued [...]" at INFO,
    hidden at the default verbosity and shown at -v 2."""

    def enqueue_lines(key: str, verbosity: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="django-q"):
            with django_capture_on_commit_callbacks(execute=True):
                call_command(
                    "chrono_forge",
                    "start",
                    ONE_STEP,
                    key,
                    verbosity=verbosity,
                    stdout=io.StringIO(),
                )
            assert logging.getLogger("django-q").level == logging.INFO  # restored afterwards
        return [r.getMessage() for r in caplog.records if "Enqueued" in r.getMessage()]

    assert enqueue_lines("loud", verbosity=2)  # the broker does log the enqueue
    assert enqueue_lines("quiet", verbosity=1) == []
    assert Workflow.objects.filter(key__in=["loud", "quiet"]).count() == 2
