"""Every admin page renders, for the right people, with what operators rely on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from chrono_forge import clock
from chrono_forge.models import ExecutionLog, Workflow
from tests.admin_fixtures import FLAKY, QUICK, make_error, make_log, make_workflow

pytestmark = pytest.mark.django_db

LIST = reverse("admin:chrono_forge_workflow_changelist")


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


@pytest.fixture
def staff(login_as):
    """A staff user who may view the three lists (and nothing else)."""
    return login_as("view_executionlog", "view_errorlog")


def text(response) -> str:
    return response.content.decode()


def test_anonymous_is_redirected_to_login(client):
    workflow = make_workflow()
    for target in (
        LIST,
        url("change", workflow.pk),
        url("overview"),
        url("stranded"),
        url("waiting"),
    ):
        response = client.get(target)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_view_permission_gets_403(client):
    user = User.objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(user)
    workflow = make_workflow()
    for target in (
        LIST,
        url("change", workflow.pk),
        url("overview"),
        url("stranded"),
        url("waiting"),
    ):
        assert client.get(target).status_code == 403, target


def test_changelist_columns_badges_and_defaults(client, staff):
    done = make_workflow("completed", key="order-1")
    stranded = make_workflow("running", key="order-2", locked_at=clock.now() - timedelta(hours=2))
    scheduled = make_workflow(
        "idle", key="order-3", next_run_at=clock.now() + timedelta(minutes=10)
    )
    response = client.get(LIST)
    assert response.status_code == 200
    body = text(response)
    for workflow in (done, stranded, scheduled):
        assert url("change", workflow.pk) in body
    assert "stranded ⚠" in body
    assert ">scheduled<" in body
    assert "Quick" in body
    # no add/delete, and the capped paginator
    assert "addlink" not in body
    assert "delete_selected" not in body
    assert "3 workflows" in body


def test_changelist_hides_branch_children_by_default(client, staff):
    parent = make_workflow("idle", key="parent")
    branch = make_log(parent, "branch$items", "pending")
    make_workflow("completed", key="child-1", parent_execution_log=branch)
    body = text(client.get(LIST))
    assert ">parent<" in body and ">child-1<" not in body
    body = text(client.get(LIST + "?branch=child"))
    assert ">parent<" not in body and ">child-1<" in body
    body = text(client.get(LIST + "?branch=all"))
    assert ">parent<" in body and ">child-1<" in body


@pytest.mark.parametrize(
    "state, shown, hidden",
    [
        ("blocked", ["f", "s"], ["i", "r", "c"]),
        ("in_flight", ["i", "r"], ["f", "s", "c"]),
        ("completed", ["c"], ["f", "s", "i", "r"]),
        ("stalled", ["s"], ["f", "c"]),
    ],
)
def test_state_filter(client, staff, state, shown, hidden):
    for key, value in (
        ("f", "failed"),
        ("s", "stalled"),
        ("i", "idle"),
        ("r", "running"),
        ("c", "completed"),
    ):
        make_workflow(value, key=key)
    body = text(client.get(LIST + f"?state={state}"))
    for key in shown:
        assert f">{key}<" in body
    for key in hidden:
        assert f">{key}<" not in body


def test_class_stranded_and_wait_filters(client, staff):
    make_workflow("completed", key="quick", job_class=QUICK)
    make_workflow("stalled", key="flaky", job_class=FLAKY)
    make_workflow("running", key="fresh-lock")
    make_workflow("running", key="stale-lock", locked_at=clock.now() - timedelta(hours=1))
    event = make_workflow("idle", key="on-event")
    make_log(event, "continue_if$paid", "pending", metadata={"condition": "paid", "name": None})
    poll = make_workflow("idle", key="on-poll")
    make_log(poll, "wait_until$shipped", "pending", metadata={"condition": "shipped"})

    body = text(client.get(LIST + f"?job_class={FLAKY}"))
    assert ">flaky<" in body and ">quick<" not in body
    body = text(client.get(LIST + "?stranded=yes"))
    assert ">stale-lock<" in body and ">fresh-lock<" not in body
    body = text(client.get(LIST + "?wait=event"))
    assert ">on-event<" in body and ">on-poll<" not in body
    body = text(client.get(LIST + "?wait=poll"))
    assert ">on-poll<" in body and ">on-event<" not in body


def test_key_search_is_an_escaped_prefix(client, staff):
    for key in ("abc-1", "abc-2", "xabc", "a%c", "a_c", "abc"):
        make_workflow(key=key)
    body = text(client.get(LIST + "?q=abc"))
    assert ">abc-1<" in body and ">abc-2<" in body and ">abc<" in body
    assert ">xabc<" not in body
    body = text(client.get(LIST + "?q=a%25"))  # a literal "%" is not a wildcard
    assert ">a%c<" in body and ">abc<" not in body and ">a_c<" not in body
    body = text(client.get(LIST + "?q=a_"))
    assert ">a_c<" in body and ">abc<" not in body


def test_state_chips_are_capped_counts_following_the_branch_toggle(client, staff):
    parent = make_workflow("idle", key="p")
    branch = make_log(parent, "branch$b", "pending")
    make_workflow("failed", key="top-failed")
    make_workflow("stalled", key="child-stalled", parent_execution_log=branch)
    chips = {c["value"]: c["count"] for c in client.get(LIST).context["chips"]}
    assert chips["blocked"] == "1" and chips["failed"] == "1" and chips["stalled"] == "0"
    chips = {c["value"]: c["count"] for c in client.get(LIST + "?branch=all").context["chips"]}
    assert chips["blocked"] == "2" and chips["idle"] == "1"


def test_change_page_timeline_errors_and_inspector(client, staff):
    workflow = make_workflow(
        "stalled",
        job_class=FLAKY,
        key="order-9",
        kwargs={"order_id": 9, "amount": 1200},
        context={"cart": {"items": [1, 2]}, "note": "x"},
    )
    t0 = clock.now() - timedelta(minutes=10)
    make_log(workflow, "durably_execute$reserve", started=t0, result={"reserved": True})
    make_log(
        workflow,
        "wait$cool_down",
        started=t0 + timedelta(minutes=1),
        metadata={"wait_until": (t0 + timedelta(minutes=2)).isoformat()},
    )
    make_log(
        workflow,
        "durably_execute$charge",
        "failed",
        started=t0 + timedelta(minutes=3),
        attempts=3,
        error_class="tests.workflows_admin.ChargeDeclined",
        error_message="card declined",
    )
    for attempt in (1, 2, 3):
        make_error(
            workflow, "durably_execute$charge", attempt=attempt, message=f"declined #{attempt}"
        )
    make_error(workflow, None, attempt=0, message="an orphan error")
    response = client.get(url("change", workflow.pk))
    assert response.status_code == 200
    page = response.context["page"]
    assert [row.step.name for row in page.timeline] == ["reserve", "cool_down", "charge"]
    charge = page.timeline[2]
    assert charge.status == "failed" and charge.current
    assert charge.attempts_text == "3 attempts"
    assert [card.error.attempt for card in charge.errors] == [1, 2, 3]
    assert [card.error.error_message for card in page.orphans] == ["an orphan error"]
    body = text(response)
    assert "Stalled at execute" in body and "failed after 3 attempts" in body
    banner = body.split('class="cf-banner-detail"')[1].split("</div>")[0]
    assert "declined #3" in banner  # the failing step's last error, not the newest orphan
    assert "<details><summary>traceback</summary>" in body
    assert '{"reserved": true}' in body.replace("&quot;", '"')
    assert "cart" in body and "order_id" in body
    assert "wait until" in body  # humanised metadata key of the wait step
    assert url("retry", workflow.pk) not in body  # no retry permission: no button


def test_failure_marker_resolves_its_error_or_says_it_is_gone(client, staff):
    workflow = make_workflow("failed", key="boom")
    error = make_error(
        workflow, None, attempt=9, error_class="RuntimeError", message="Permanent Failure"
    )
    make_log(workflow, f"$workflow_failure${error.pk}", metadata={"error_log_id": error.pk})
    make_log(workflow, "$workflow_failure$999999", metadata={"error_log_id": 999999})
    # a marker naming a key of another type (a UUID) never breaks the page
    make_log(workflow, "$workflow_failure$0b7e-not-an-int", metadata={})
    page = client.get(url("change", workflow.pk)).context["page"]
    first, second, third = page.timeline
    assert third.missing_error_id == "0b7e-not-an-int"
    assert [card.error.pk for card in first.errors] == [error.pk]
    assert second.missing_error_id == "999999" and not second.errors
    assert page.orphans == []
    body = text(client.get(url("change", workflow.pk)))
    assert "error log #999999 is no longer available" in body
    assert "Failed: perform() raised and the workflow-level retries ran out" in body
    assert "RuntimeError</code>: Permanent Failure" in body


def test_change_page_parent_breadcrumb_and_branches_panel(client, staff):
    parent = make_workflow("idle", key="fanout")
    now = clock.now()
    branch = make_log(
        parent,
        "branch$items",
        "completed",
        metadata={
            "automerge": False,
            "sealed": True,
            "cursors": {"x": {"pk": 3}},
            "poll_token": "t",
            "poll": {
                "pending": 7,
                "spawned": 10,
                "never_started": 1,
                "sealed": True,
                "polls": 4,
                "last_polled_at": now.isoformat(),
                "next_poll_at": (now - timedelta(minutes=5)).isoformat(),
                "rate": 0.5,
                "eta_seconds": 14,
            },
        },
    )
    make_log(
        parent,
        "merge$items",
        "pending",
        metadata={"branches": ["items"], "min_interval": 5, "max_interval": 300, "poll_token": "t"},
    )
    child = make_workflow("stalled", key="child-1", parent_execution_log=branch)
    body = text(client.get(url("change", parent.pk)))
    page = client.get(url("change", parent.pk)).context["page"]
    (panel,) = page.branches
    assert (panel.spawned, panel.pending, panel.never_started, panel.blocked) == ("10", "7", "1", 1)
    assert panel.poll_overdue and panel.merge_state == "merging"
    assert "poll overdue" in body and url("branch", parent.pk, branch.pk) in body
    assert "poll_token" not in body and "cursors" not in body  # internal keys are hidden
    child_body = text(client.get(url("change", child.pk)))
    assert url("change", parent.pk) in child_body and "branch items" in child_body


def test_waiting_banner_and_stranded_pages(client, staff):
    now = clock.now()
    event = make_workflow("idle", key="waits-for-payment", job_class=FLAKY)
    make_log(
        event,
        "continue_if$paid",
        "pending",
        started=now - timedelta(hours=3),
        metadata={"condition": "paid", "name": None},
    )
    poll = make_workflow("idle", key="polls-shipping")
    make_log(
        poll,
        "wait_until$shipped",
        "pending",
        started=now - timedelta(minutes=5),
        metadata={
            "condition": "shipped",
            "timeout_at": (now + timedelta(hours=1)).isoformat(),
            "check_interval": 900,
        },
    )
    body = text(client.get(url("waiting")))
    assert "1 event wait stalled beyond 1h 00m" in body
    assert body.index("waits-for-payment") < body.index("polls-shipping")
    assert 'cf-pill cf-violet">event' in body and 'cf-pill cf-sky">poll' in body

    make_workflow("running", key="fresh")
    make_workflow("running", key="dead", locked_at=now - timedelta(hours=2), locked_by="w-dead")
    response = client.get(url("stranded"))
    body = text(response)
    assert [i["workflow"].key for i in response.context["items"]] == ["dead"]
    assert "w-dead" in body and "reap_stalled" in body


def test_overview_counts_by_state_and_class(client, staff):
    for state in ("completed", "completed", "failed", "idle"):
        make_workflow(state, job_class=QUICK)
    make_workflow("completed", job_class=FLAKY)
    response = client.get(url("overview"))
    assert response.status_code == 200
    context = response.context
    assert (context["processed"], context["in_flight"], context["blocked"]) == (3, 1, 1)
    assert [c["name"] for c in context["classes"]] == ["Quick", "FlakyCharge"]
    assert context["classes"][0]["share_text"] == "66.67%"


def test_repetitions_page_summary_and_keyset(client, staff):
    workflow = make_workflow("idle", key="ticker")
    start = clock.now() - timedelta(hours=2)
    coord = make_log(
        workflow,
        "durably_repeat$tick",
        "pending",
        metadata={
            "method": "tick",
            "every": 60,
            "till": "done?",
            "start_at": start.isoformat(),
            "last_execution_at": start.isoformat(),
            "next_execution_at": (start + timedelta(hours=3)).isoformat(),
            "timeout": 3600,
            "on_error": "continue",
        },
    )
    for n in range(60):
        at = start + timedelta(minutes=n)
        make_log(
            workflow,
            f"durably_repeat$tick${int(at.timestamp())}",
            started=at + timedelta(seconds=n % 3),
            metadata={"scheduled_for": at.isoformat(), "parent_id": coord.pk},
        )
    at = start + timedelta(minutes=61)
    make_log(
        workflow,
        f"durably_repeat$tick${int(at.timestamp())}",
        "failed",
        error_class="TimeoutError",
        metadata={
            "scheduled_for": at.isoformat(),
            "parent_id": coord.pk,
            "fast_forwarded": 5,
            "skipped_from": at.isoformat(),
            "skipped_to": at.isoformat(),
        },
    )
    # "_" must not act as a LIKE wildcard: ti_k's repetitions are not tiXk's
    make_log(workflow, "durably_repeat$ti_k", "pending", metadata={"method": "t", "every": 60})
    for n in range(3):
        make_log(workflow, f"durably_repeat$tiXk${1000 + n}", metadata={})
    page = client.get(url("change", workflow.pk)).context["page"]
    assert [row.step.name for row in page.timeline] == ["tick", "ti_k"]  # repetition rows excluded
    tick, ti_k = page.periodic
    assert (tick.iterations, tick.skipped, tick.missed) == (60, 5, 5)
    assert ti_k.iterations == 0
    response = client.get(url("repetitions", workflow.pk) + "?step=tick")
    assert response.status_code == 200
    items = response.context["items"]
    assert len(items) == 50 and items[0]["status"] == "caught up ×5"
    assert "Catch-up ticks skipped" in text(response)
    older = client.get(
        url("repetitions", workflow.pk) + f"?step=tick&before={response.context['next_cursor']}"
    )
    assert len(older.context["items"]) == 11
    assert client.get(url("repetitions", workflow.pk) + "?step=nope").status_code == 404


def test_branch_children_page_defaults_to_blocked(client, staff):
    parent = make_workflow("idle", key="fan")
    branch = make_log(parent, "branch$items", "pending", metadata={"sealed": False})
    make_workflow("stalled", key="kid-stalled", parent_execution_log=branch)
    make_workflow("completed", key="kid-done", parent_execution_log=branch)
    response = client.get(url("branch", parent.pk, branch.pk))
    body = text(response)
    assert ">kid-stalled<" in body and ">kid-done<" not in body
    body = text(client.get(url("branch", parent.pk, branch.pk) + "?state=all"))
    assert ">kid-stalled<" in body and ">kid-done<" in body
    assert response.context["branch"].spawned == "2"  # not polled yet: live capped count


def test_branch_children_page_defaults_to_all_when_none_is_blocked(client, staff):
    parent = make_workflow("idle", key="fan")
    branch = make_log(parent, "branch$items", "pending", metadata={"sealed": False})
    make_workflow("running", key="kid-running", parent_execution_log=branch)
    make_workflow("completed", key="kid-done", parent_execution_log=branch)
    response = client.get(url("branch", parent.pk, branch.pk))
    body = text(response)
    assert ">kid-running<" in body and ">kid-done<" in body
    assert response.context["state"] == "all"
    assert [chip["value"] for chip in response.context["chips"] if chip["selected"]] == ["all"]
    body = text(client.get(url("branch", parent.pk, branch.pk) + "?state=blocked"))
    assert "No blocked children." in body  # asked for explicitly: an empty list that says so


def test_log_changelists_filters_and_search(client, staff):
    workflow = make_workflow("stalled")
    make_log(workflow, "durably_execute$charge", "failed")
    make_log(workflow, "wait$pause")
    make_error(workflow, "durably_execute$charge", error_class="ValueError")
    make_error(workflow, "durably_execute$charge", error_class="KeyError")
    steps = reverse("admin:chrono_forge_executionlog_changelist")
    names = lambda response: [log.step_name for log in response.context["cl"].result_list]  # noqa: E731
    assert names(client.get(steps + "?kind=wait")) == ["wait$pause"]
    assert names(client.get(steps + "?q=durably_execute%24ch")) == ["durably_execute$charge"]
    assert names(client.get(steps + "?q=charge")) == []  # a prefix, not a substring
    errors = reverse("admin:chrono_forge_errorlog_changelist")
    response = client.get(errors + "?error_class=KeyError")
    assert response.status_code == 200
    assert [e.error_class for e in response.context["cl"].result_list] == ["KeyError"]
    other = make_workflow("completed")
    make_log(other, "durably_execute$charge")
    only_first = f"?workflow__id__exact={workflow.pk}"  # the "all steps/errors" links
    assert len(client.get(steps + only_first).context["cl"].result_list) == 2
    assert len(client.get(errors + only_first).context["cl"].result_list) == 2
    assert f"{steps}{only_first}" in text(client.get(url("change", workflow.pk)))
    log = ExecutionLog.objects.first()
    assert (
        client.get(reverse("admin:chrono_forge_executionlog_change", args=[log.pk])).status_code
        == 200
    )
    error = workflow.error_logs.first()
    body = text(client.get(reverse("admin:chrono_forge_errorlog_change", args=[error.pk])))
    assert "Traceback" in body
    assert Workflow.objects.count() == 2


def test_waiting_threshold_is_a_setting(client, staff, settings):
    settings.CHRONO_FORGE = {"ADMIN_LONG_WAIT_THRESHOLD": 60}
    poll = make_workflow("idle", key="polls")
    make_log(
        poll,
        "wait_until$shipped",
        "pending",
        started=clock.now() - timedelta(minutes=5),
        metadata={
            "condition": "shipped",
            "timeout_at": (clock.now() + timedelta(hours=1)).isoformat(),
        },
    )
    response = client.get(url("waiting"))
    (item,) = response.context["items"]
    assert item["over"] and item["tone"] == "amber"  # a poll over the threshold: amber, not rose
    assert response.context["stalled_events"] == 0  # a capped count of event waits only
    assert "Waits longer than 1m 00s are flagged" in text(response)


def test_admin_index_links_the_operator_pages(client, staff):
    body = text(client.get(reverse("admin:app_list", args=["chrono_forge"])))
    for name in ("overview", "waiting", "stranded"):
        assert url(name) in body


def test_change_page_says_an_empty_context_is_empty_not_its_json_size(client, staff):
    """``{}`` serialises to 2 bytes; the page must not report that as the context's size."""
    empty = make_workflow("completed", context={})
    full = make_workflow("completed", context={"note": "hello"})
    html = text(client.get(url("change", empty.pk)))
    assert '<span class="cf-muted">empty · limit' in html and "2 bytes" not in html
    assert "The context is empty." in html
    html = text(client.get(url("change", full.pk)))
    assert "bytes in total · limit" in html


def test_timeline_shows_each_steps_stored_name_beside_its_label(client, staff):
    """Operators match log lines, ErrorLog rows and `show` output (which use the stored name) to a
    timeline entry."""
    workflow = make_workflow("stalled")
    make_log(workflow, "durably_execute$charge_card", "failed")
    make_log(workflow, "wait$cool_down")
    html = text(client.get(url("change", workflow.pk)))
    assert '<code class="cf-raw-name cf-muted"' in html
    assert ">durably_execute$charge_card</code>" in html and ">wait$cool_down</code>" in html
