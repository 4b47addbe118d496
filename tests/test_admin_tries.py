"""After operator retries, a step's attempts are counted over all its tries and numbered per try
(on the workflow page, in the Steps list and in ``chrono_forge show``), and a step that finally
completed shows its old failures as history only, not as its current error."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from chrono_forge.models import ExecutionLog, Workflow
from chrono_forge.pages import workflow_page as p
from tests import workflows_admin as wa
from tests.core_sql import capture

pytestmark = pytest.mark.django_db

CHARGE = "durably_execute$charge"
STEPS = reverse("admin:chrono_forge_executionlog_changelist")


def change_url(workflow) -> str:
    return reverse("admin:chrono_forge_workflow_change", args=[workflow.pk])


def show(key: str) -> str:
    out = StringIO()
    call_command("chrono_forge", "show", key, stdout=out, no_color=True)
    return out.getvalue()


def stalled_twice_then_completed(env) -> Workflow:
    """FlakyCharge (2 attempts per try): try 1 and try 2 fail both attempts, each followed by an
    operator retry (the real API); try 3's first attempt succeeds. 5 attempts over 3 tries."""
    wa.FlakyCharge.perform_later("flaky", order_id=7)
    env.run_all()
    assert Workflow.objects.get(key="flaky").state == "stalled"
    env.advance(timedelta(minutes=5))
    wa.FlakyCharge.retry_now("flaky")  # try 2: its first attempt runs inline and fails
    env.run_all()  # its second attempt fails too
    assert Workflow.objects.get(key="flaky").state == "stalled"
    env.advance(timedelta(minutes=5))
    wa.CALLS["fixed"] = 1
    Workflow.objects.get(key="flaky").retry_later()  # try 3, through the queue
    env.run_all()
    workflow = Workflow.objects.get(key="flaky")
    assert workflow.state == "completed"
    assert wa.CALLS["charge"] == 5
    return workflow


def charge_row(page: p.WorkflowPage) -> p.TimelineRow:
    return next(row for row in page.timeline if row.log.step_name == CHARGE)


def test_the_page_counts_attempts_over_tries_and_numbers_them_per_try(
    client, operator, chrono_forge_env
):
    workflow = stalled_twice_then_completed(chrono_forge_env)
    log = ExecutionLog.objects.get(workflow=workflow, step_name=CHARGE)
    # what the row itself says: the last try's one attempt, and the failure it ended try 2 with
    assert (log.state, log.attempts) == ("completed", 1)
    assert log.error_class.endswith("ChargeDeclined")

    page = p.workflow_page(workflow)
    row = charge_row(page)
    assert row.tries is not None
    assert (row.tries.tries, row.tries.attempts, row.tries.current_attempts) == (3, 5, 1)
    assert row.attempts_text == "5 attempts over 3 tries"
    assert [(card.try_number, card.error.attempt) for card in row.errors] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    reserve = next(r for r in page.timeline if r.log.step_name == "durably_execute$reserve")
    assert reserve.tries is None and reserve.attempts_text == ""  # never reset: as before

    body = client.get(change_url(workflow)).content.decode()
    assert "5 attempts over 3 tries" in body
    assert "try 1, attempt 2" in body and "try 2, attempt 1" in body
    # history stays in the error cards, and the completed step shows no current error
    assert body.count('class="cf-error"') == 4
    assert "cf-banner-rose" not in body


def test_a_step_stalled_again_after_a_retry_says_which_try_failed(
    client, operator, chrono_forge_env
):
    wa.FlakyCharge.perform_later("again")
    chrono_forge_env.run_all()
    chrono_forge_env.advance(timedelta(minutes=1))
    wa.FlakyCharge.retry_now("again")
    chrono_forge_env.run_all()
    workflow = Workflow.objects.get(key="again")
    assert workflow.state == "stalled"
    body = client.get(change_url(workflow)).content.decode()
    assert "failed after 2 attempts in try 2 (4 attempts over 2 tries)" in body
    assert "try 2, attempt 2" in body
    assert "attempts=4 over 2 tries (this try: 2)" in show("again")


def test_a_step_never_retried_reads_as_before(client, operator, chrono_forge_env):
    wa.FlakyCharge.perform_later("once")
    chrono_forge_env.run_all()
    workflow = Workflow.objects.get(key="once")
    page = p.workflow_page(workflow)
    row = charge_row(page)
    assert row.tries is None and row.attempts_text == "2 attempts"
    assert [card.try_number for card in row.errors] == [None, None]
    body = client.get(change_url(workflow)).content.decode()
    assert "try 1, attempt" not in body and "attempts over" not in body
    assert "failed after 2 attempts</strong>" in body
    assert re.search(r"attempt 1</span>", body)
    text = show("once")
    assert "attempts=2  " in text and "over 1 tries" not in text and "try 1, " not in text
    assert "x attempt 1 tests.workflows_admin.ChargeDeclined" in text


def test_the_steps_list_and_show_say_the_same(client, operator, chrono_forge_env):
    workflow = stalled_twice_then_completed(chrono_forge_env)
    body = client.get(STEPS + f"?workflow__id__exact={workflow.pk}").content.decode()
    assert "5 over 3 tries" in body

    log = ExecutionLog.objects.get(workflow=workflow, step_name=CHARGE)
    detail = client.get(
        reverse("admin:chrono_forge_executionlog_change", args=[log.pk])
    ).content.decode()
    assert "5 over 3 tries" in detail
    assert "card declined" not in detail  # the row's old error is not shown as current

    text = show("flaky")
    (line,) = [line for line in text.splitlines() if f". {CHARGE}" in line]
    assert "attempts=5 over 3 tries" in line
    assert "error: " not in text  # the completed step's stale error
    assert "try 1, attempt 2 tests.workflows_admin.ChargeDeclined" in text
    assert "try 2, attempt 1 tests.workflows_admin.ChargeDeclined" in text


def test_the_page_reads_tries_in_one_query_whatever_their_number(
    client, operator, chrono_forge_env
):
    """Only a workflow with retry markers pays one query more, however many tries it had."""

    def queries(key: str) -> int:
        target = change_url(Workflow.objects.get(key=key))
        client.get(target)
        with capture() as captured:
            assert client.get(target).status_code == 200
        return len(captured.captured_queries)

    def retry(key: str) -> None:
        chrono_forge_env.advance(timedelta(minutes=1))
        wa.FlakyCharge.retry_now(key)
        chrono_forge_env.run_all()

    wa.FlakyCharge.perform_later("never")
    wa.FlakyCharge.perform_later("retried")
    chrono_forge_env.run_all()
    retry("retried")
    once = queries("retried")
    for _ in range(3):
        retry("retried")
    assert charge_row(p.workflow_page(Workflow.objects.get(key="retried"))).tries.tries == 5
    assert queries("retried") == once == queries("never") + 1


def test_a_forced_retry_that_did_not_reset_the_step_is_still_one_try(
    client, operator, chrono_forge_env
):
    """Cancelled while its step waited for a retry, then resumed on purpose: the step was pending,
    not failed, so the retry did not reset it and its attempts went on counting (1, then 2)."""
    wa.FlakyCharge.perform_later("forced")
    chrono_forge_env.run_due()  # attempt 1 fails; attempt 2 is scheduled
    workflow = Workflow.objects.get(key="forced")
    workflow.cancel("by mistake")
    chrono_forge_env.advance(timedelta(minutes=1))
    wa.FlakyCharge.retry_now("forced", resume_cancelled=True)
    chrono_forge_env.run_all()
    workflow.refresh_from_db()
    assert workflow.state == "stalled"
    assert ExecutionLog.objects.filter(workflow=workflow, step_name__startswith="$workflow_retry$")
    assert ExecutionLog.objects.get(workflow=workflow, step_name=CHARGE).attempts == 2
    row = charge_row(p.workflow_page(workflow))
    assert row.tries is None and row.attempts_text == "2 attempts"
    assert [(card.try_number, card.error.attempt) for card in row.errors] == [(None, 1), (None, 2)]


def test_the_steps_list_reads_tries_in_a_fixed_number_of_queries(
    client, operator, chrono_forge_env
):
    def queries() -> tuple[int, str]:
        client.get(STEPS)
        with capture() as captured:
            response = client.get(STEPS)
        assert response.status_code == 200
        return len(captured.captured_queries), response.content.decode()

    wa.FlakyCharge.perform_later("first")
    chrono_forge_env.run_all()
    chrono_forge_env.advance(timedelta(minutes=1))
    wa.FlakyCharge.retry_now("first")
    chrono_forge_env.run_all()
    few, body = queries()
    assert body.count("4 over 2 tries") == 1
    for i in range(5):
        wa.FlakyCharge.perform_later(f"more-{i}")
    chrono_forge_env.run_all()
    for i in range(5):
        chrono_forge_env.advance(timedelta(minutes=1))
        wa.FlakyCharge.retry_now(f"more-{i}")
        chrono_forge_env.run_all()
        chrono_forge_env.advance(timedelta(minutes=1))
        wa.FlakyCharge.retry_now(f"more-{i}")
        chrono_forge_env.run_all()
    many, body = queries()
    assert body.count("6 over 3 tries") == 5 and body.count("4 over 2 tries") == 1
    assert many == few


def test_the_tries_query_counts_one_steps_errors_never_a_table(client, operator, chrono_forge_env):
    """The admin counts no whole table: each COUNT of the tries query is correlated to one step
    log's workflow and name (the rest of the page keeps its capped counts)."""
    wa.FlakyCharge.perform_later("counted")
    chrono_forge_env.run_all()
    chrono_forge_env.advance(timedelta(minutes=1))
    wa.FlakyCharge.retry_now("counted")
    chrono_forge_env.run_all()
    target = change_url(Workflow.objects.get(key="counted"))
    client.get(target)
    with capture() as captured:
        client.get(target)
    counting = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    # The subquery alias is U0 (Django 5.2) or "U0" (Django 6 quotes it).
    correlated = re.compile(
        r'\(SELECT COUNT\([^()]*\) AS "n" FROM "chrono_forge_errorlog" "?U0"? WHERE \([^()]*'
        r'"?U0"?\."step_name" = \("chrono_forge_executionlog"\."step_name"\) AND '
        r'"?U0"?\."workflow_id" = \("chrono_forge_executionlog"\."workflow_id"\)'
    )
    tries_sql = [sql for sql in counting if "chrono_forge_errorlog" in sql and "U0" in sql]
    assert len(tries_sql) == 1
    assert len(correlated.findall(tries_sql[0])) == tries_sql[0].upper().count("COUNT(") == 2
    for sql in counting:
        if sql not in tries_sql:
            head, _, inner = sql.partition("FROM (")
            assert "LIMIT" in inner.upper(), sql


def test_a_blocked_run_is_never_shown_stuck_at_a_step_that_completed(
    client, operator, chrono_forge_env
):
    """Stalled by a workflow-level error after a step that failed once and then completed: the
    banner names neither that step nor its old error, which stays in its error card."""
    from tests.admin_fixtures import FLAKY, make_error, make_log, make_workflow

    workflow = make_workflow("stalled", job_class=FLAKY)
    make_error(workflow, None, attempt=None, message="the registry is down")
    chrono_forge_env.advance(timedelta(seconds=5))
    make_log(
        workflow,
        CHARGE,
        "completed",
        attempts=1,
        error_class="tests.workflows_admin.ChargeDeclined",
        error_message="card declined",
    )
    make_error(workflow, CHARGE, message="card declined")
    page = p.workflow_page(workflow)
    assert page.blocked_row is None
    assert page.banner_error is not None
    assert page.banner_error.error_message == "the registry is down"
    body = client.get(change_url(workflow)).content.decode()
    banner = body.split('class="cf-banner cf-banner-rose"', 1)[1].split("</div>\n</div>", 1)[0]
    assert "the registry is down" in banner
    assert "charge" not in banner and "card declined" not in banner
    assert len(charge_row(page).errors) == 1  # the history stays on the step
