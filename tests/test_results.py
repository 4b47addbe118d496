"""Workflow results: the value ``perform()`` returns is stored with the completion, read back with
``Cls.result`` / ``workflow.result`` / ``Cls.wait_for_result``, survives replays and crashes, and a
value that cannot be stored stalls the run with the reason recorded and nothing stored. A parent
reads its merged children's results with ``branch_results``, streamed by primary key."""

from __future__ import annotations

import io
import math
import tracemalloc

import pytest
from django.core.management import call_command
from django.db.models import F
from django.test import override_settings
from django.urls import reverse

from chrono_forge import step_names
from chrono_forge.exceptions import (
    InvalidStepName,
    InvalidWorkflowResult,
    ResultNotReadyError,
    ResultTimeout,
    UnknownBranchError,
    UnmergedBranchError,
    WaitForResultInWorkflowError,
)
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.testing import CrashTest, assert_crash_safe
from tests import workflows_results as wr
from tests.core_sql import capture

pytestmark = pytest.mark.django_db


# -- the stored result -----------------------------------------------------------------------------
def test_the_value_perform_returns_is_stored_on_the_row_and_read_by_result(chrono_forge_env):
    wr.Totals.perform_later("o-1", order_id=7)
    chrono_forge_env.run_all()
    row = Workflow.objects.get(key="o-1")
    assert row.state == "completed"
    assert row.result == {"order_id": 7, "total": 42}
    assert wr.Totals.result("o-1") == {"order_id": 7, "total": 42}


def test_a_completed_run_keeps_its_result_when_enqueued_again(chrono_forge_env):
    wr.Totals.perform_later("o-1", order_id=7)
    chrono_forge_env.run_all()
    row = wr.Totals.perform_now("o-1")
    assert (row.state, row.result) == ("completed", {"order_id": 7, "total": 42})


def test_perform_returning_nothing_stores_none(chrono_forge_env):
    row = wr.ReturnsNothing.perform_now("n-1")
    assert (row.state, row.result) == ("completed", None)
    assert wr.ReturnsNothing.result("n-1") is None


def test_result_of_an_unfinished_run_is_a_clear_error_and_the_column_is_none(chrono_forge_env):
    row = wr.Totals.perform_later("o-2", order_id=1)  # idle, not run yet
    with pytest.raises(ResultNotReadyError, match=r"Totals\(o-2\) is idle") as caught:
        wr.Totals.result("o-2")
    assert caught.value.state == "idle"
    row.refresh_from_db()
    assert row.result is None


def test_result_of_an_unknown_key_or_a_bad_key_is_a_clear_error():
    with pytest.raises(Workflow.DoesNotExist, match=r"Totals\(missing\) does not exist"):
        wr.Totals.result("missing")
    with pytest.raises(TypeError, match="must be a str"):
        wr.Totals.result(12)


def test_a_result_built_from_replayed_steps_is_the_same_on_every_pass(chrono_forge_env):
    wr.FLAGS["fail_after_once"] = True
    wr.SumChildren.perform_later("p", n=3)
    chrono_forge_env.run_all()
    row = Workflow.objects.get(key="p")
    assert (row.state, row.result) == ("completed", {"total": 0 + 2 + 4, "count": 3})


# -- bad results: blocked with the reason recorded, nothing stored ---------------------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        ({1, 2}, "set"),
        ((1, 2), "tuples are refused"),
        ({1: "a"}, "JSON keys are strings"),
        (math.nan, "is not a JSON number"),
        ("x" * 200, "RESULT_MAX_BYTES"),
        (object(), "is not JSON"),
    ],
    ids=["set", "tuple", "int-key", "nan", "too-large", "object"],
)
@override_settings(CHRONO_FORGE={"RESULT_MAX_BYTES": 100})
def test_a_result_that_cannot_be_stored_stalls_the_run_with_the_reason(
    chrono_forge_env, bad, message
):
    wr.FLAGS["bad"] = bad
    with pytest.raises(InvalidWorkflowResult, match=message):
        wr.BadResult.perform_now("b-1")
    row = Workflow.objects.get(key="b-1")
    assert (row.state, row.result, row.completed_at) == ("stalled", None, None)
    assert row.next_run_at is None and row.locked_by is None  # blocked, with a recorded reason:
    [error] = ErrorLog.objects.filter(workflow=row)
    assert error.error_class.endswith("InvalidWorkflowResult")
    assert "BadResult.perform()" in error.error_message and message in error.error_message
    names = set(ExecutionLog.objects.filter(workflow=row).values_list("step_name", flat=True))
    assert names == {"durably_execute$step"}  # no completion marker
    with pytest.raises(ResultNotReadyError, match="stalled"):
        wr.BadResult.result("b-1")

    # Fixed code: an operator retry replays perform() and stores the result.
    wr.FLAGS["bad"] = {"fixed": True}
    row = wr.BadResult.retry_now("b-1")
    assert (row.state, row.result) == ("completed", {"fixed": True})


def test_the_result_limit_is_the_result_max_bytes_setting(chrono_forge_env):
    wr.FLAGS["bad"] = "x" * 90  # 92 bytes as JSON
    with override_settings(CHRONO_FORGE={"RESULT_MAX_BYTES": 92}):
        assert wr.BadResult.perform_now("fits").result == "x" * 90
    with override_settings(CHRONO_FORGE={"RESULT_MAX_BYTES": 91}):
        with pytest.raises(
            InvalidWorkflowResult, match=r"larger than the limit of 91 bytes \(RESULT_MAX_BYTES\)"
        ):
            wr.BadResult.perform_now("too-big")


# -- crashes ---------------------------------------------------------------------------------------
def test_the_result_survives_a_crash_at_every_step_boundary():
    report = assert_crash_safe(wr.Totals, "crash-1", order_id=3)
    [(identity, outcome)] = report.clean.items()
    assert outcome["result"] == {"order_id": 3, "total": 42}


def test_branch_results_survive_a_crash_at_every_step_boundary():
    report = assert_crash_safe(wr.SumChildren, "crash-2", n=3)
    parent = report.clean[(wr.SumChildren.job_class(), "crash-2")]
    assert parent["result"] == {"total": 6, "count": 3}


def test_the_crash_check_catches_a_result_that_a_kill_changes():
    with pytest.raises(
        AssertionError, match=r"CountsPasses\(crash-3\) result [2-9], the uninterrupted run 1"
    ):
        CrashTest(wr.CountsPasses, "crash-3", {}, before_each=wr.PASSES.clear).assert_safe()


# -- wait_for_result -------------------------------------------------------------------------------
def test_wait_for_result_returns_a_completed_runs_result(chrono_forge_env):
    wr.Totals.perform_now("w-1", order_id=5)
    assert wr.Totals.wait_for_result("w-1", timeout=5) == {"order_id": 5, "total": 42}


def test_wait_for_result_raises_a_timeout_for_a_run_still_unfinished(chrono_forge_env):
    wr.Totals.perform_later("w-2", order_id=5)
    with pytest.raises(ResultTimeout, match=r"Totals\(w-2\) is still idle after 0.05s") as caught:
        wr.Totals.wait_for_result("w-2", timeout=0.05, interval=0.01)
    assert caught.value.state == "idle"
    assert isinstance(caught.value, TimeoutError)


def test_wait_for_result_stops_at_once_on_a_blocked_run(chrono_forge_env):
    wr.FLAGS["bad"] = {1, 2}
    with pytest.raises(InvalidWorkflowResult):
        wr.BadResult.perform_now("w-3")
    with pytest.raises(ResultNotReadyError, match="stalled") as caught:
        wr.BadResult.wait_for_result("w-3", timeout=3600)
    assert not isinstance(caught.value, ResultTimeout)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"timeout": 0}, ValueError, "timeout must be greater than 0"),
        ({"timeout": -1}, ValueError, "timeout must be greater than 0"),
        ({"timeout": math.inf}, ValueError, "timeout: must be a finite duration"),
        ({"timeout": math.nan}, ValueError, "timeout: must be a finite duration"),
        ({"timeout": "5"}, TypeError, "timeout: expected a timedelta"),
        ({"interval": 0}, ValueError, "interval must be greater than 0"),
    ],
)
def test_wait_for_result_refuses_a_bad_timeout_or_interval(kwargs, error, message):
    with pytest.raises(error, match=message):
        wr.Totals.wait_for_result("any", **kwargs)


def test_wait_for_result_inside_perform_stalls_the_run(chrono_forge_env):
    with pytest.raises(WaitForResultInWorkflowError, match="inside a workflow"):
        wr.WaitsInPerform.perform_now("in-1")
    row = Workflow.objects.get(key="in-1")
    assert row.state == "stalled"
    assert ErrorLog.objects.get(workflow=row).error_class.endswith("WaitForResultInWorkflowError")


def test_wait_for_result_inside_a_step_fails_the_step(chrono_forge_env):
    wr.WaitsInStep.perform_now("in-2")
    row = Workflow.objects.get(key="in-2")
    assert row.state == "stalled"
    error = ErrorLog.objects.get(workflow=row)
    assert (error.step_name, error.error_class.rsplit(".", 1)[-1]) == (
        "durably_execute$step",
        "WaitForResultInWorkflowError",
    )


# -- branch_results --------------------------------------------------------------------------------
def test_branch_results_yields_child_keys_and_results_by_primary_key_and_replays_the_same(
    chrono_forge_env,
):
    wr.FLAGS["fail_after_once"] = True  # a retry of the step after the read: a second pass reads
    wr.SumChildren.perform_later("p", n=3)
    chrono_forge_env.run_all()
    children = list(
        Workflow.objects.filter(key__startswith="p$").order_by("pk").values_list("key", "result")
    )
    assert children == [("p$items$c_0", 0), ("p$items$c_1", 2), ("p$items$c_2", 4)]
    reads = wr.READS["p"]
    assert len(reads) == 2  # the pass that merged and the retry's replay
    assert reads[0] == reads[1] == [list(pair) for pair in children]


def test_branch_results_pages_cover_every_child_once(chrono_forge_env):
    wr.SumChildren.perform_later("p2", n=7, of=3)
    chrono_forge_env.run_all()
    [seen] = wr.READS["p2"]
    assert [key for key, _ in seen] == [f"p2$items$c_{i}" for i in range(7)]


def test_branch_results_of_an_unmerged_branch_stalls_with_the_reason(chrono_forge_env):
    with pytest.raises(UnmergedBranchError, match=r"branch_results\('items'\).*not merged yet"):
        wr.ReadsUnmerged.perform_now("u-1")
    assert Workflow.objects.get(key="u-1").state == "stalled"


def test_branch_results_of_a_branch_never_opened_stalls_with_the_reason(chrono_forge_env):
    with pytest.raises(UnknownBranchError, match="'never_opened' was never opened"):
        wr.ReadsUnknown.perform_now("u-2")
    assert Workflow.objects.get(key="u-2").state == "stalled"


def test_branch_results_refuses_a_bad_branch_name(chrono_forge_env):
    with pytest.raises(InvalidStepName, match="must not contain"):
        wr.ReadsBadName.perform_now("u-3")


def _stream(env, key: str, n: int, of: int) -> tuple[int, int, int]:
    """Run StreamResults over ``n`` children completed in bulk; -> (rows seen, queries, peak)."""
    seen: dict[str, int] = {}

    def consume(iterator):
        tracemalloc.start()
        try:
            with capture() as queries:
                count, previous = 0, None
                for child_key, result in iterator:
                    assert previous is None or child_key != previous
                    assert result == {"value": int(child_key.rsplit("_", 1)[1])}
                    previous, count = child_key, count + 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        seen.update(count=count, queries=len(queries), peak=peak)

    wr.PROBE["consume"] = consume
    wr.StreamResults.perform_now(key, n=n, of=of)  # dispatches the n children; the merge parks
    parent = Workflow.objects.get(key=key)
    branch = ExecutionLog.objects.get(
        workflow=parent, step_name=step_names.StepName("branch", "items").format()
    )
    children = Workflow.objects.filter(parent_execution_log=branch)
    assert children.count() == n
    children.update(state="completed", result=F("kwargs"), next_run_at=None)  # done, in bulk
    env.drop_pending()  # the children's deliveries and the merge poller: never run
    row = wr.StreamResults.perform_now(key)  # the merge finds every child completed
    assert row.state == "completed"
    return seen["count"], seen["queries"], seen["peak"]


def test_branch_results_streams_10k_children_in_flat_memory(chrono_forge_env):
    count_small, queries_small, peak_small = _stream(chrono_forge_env, "s-1k", 1_000, of=500)
    count_big, queries_big, peak_big = _stream(chrono_forge_env, "s-10k", 10_000, of=500)
    assert (count_small, count_big) == (1_000, 10_000)
    # One keyset page per query, plus the empty page that ends an exact multiple.
    assert (queries_small, queries_big) == (1_000 // 500 + 1, 10_000 // 500 + 1)
    # Ten times the children, the same memory: one page at a time.
    assert peak_big < 1.5 * peak_small, (peak_small, peak_big)

    # The control: holding all 10k at once does cost ten times more, so the check above can fail.
    tracemalloc.start()
    try:
        rows = list(
            Workflow.objects.filter(key__startswith="s-10k$").values_list("pk", "key", "result")
        )
        _, peak_all = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 10_000
    assert peak_all > 4 * peak_big, (peak_all, peak_big)


# -- where an operator sees it ---------------------------------------------------------------------
def test_the_workflow_page_shows_a_completed_runs_result_and_says_when_there_is_none(
    client, operator
):
    done = wr.Totals.perform_now("page-1", order_id=9)
    html = client.get(reverse("admin:chrono_forge_workflow_change", args=[done.pk])).content
    html = html.decode()
    assert "<h2>Result</h2>" in html and "order_id" in html and "42" in html
    pending = Workflow.objects.create(job_class=done.job_class, key="page-2", state="idle")
    html = client.get(reverse("admin:chrono_forge_workflow_change", args=[pending.pk])).content
    assert "No result yet" in html.decode()


def test_show_prints_a_completed_runs_result_and_nothing_for_an_unfinished_one():
    def show(key):
        out = io.StringIO()
        call_command("chrono_forge", "show", key, stdout=out, stderr=io.StringIO(), no_color=True)
        return out.getvalue()

    wr.Totals.perform_now("show-1", order_id=4)
    assert 'result: {"order_id": 4, "total": 42}' in show("show-1")
    Workflow.objects.create(job_class="tests.workflows_results.Totals", key="show-2", state="idle")
    assert "result:" not in show("show-2")
