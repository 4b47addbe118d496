"""The admin reads what the real primitives store (the metadata contract), end to end."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chrono_forge.models import Workflow
from tests import workflows_admin as wa

pytestmark = pytest.mark.django_db


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


@pytest.fixture(autouse=True)
def logged_in_operator(operator):
    """Every test of this module runs logged in as a superuser."""


def test_waits_show_as_event_then_poll_then_done(client, chrono_forge_env):
    wa.Onboarding.perform_later("cust-1", customer_id=1)
    chrono_forge_env.run_all()  # executes, sleeps 5 minutes, then parks on the event
    workflow = Workflow.objects.get()
    assert workflow.state == "idle" and workflow.next_run_at is None

    page = client.get(url("change", workflow.pk)).context["page"]
    assert [(r.step.label, r.step.name, r.status) for r in page.timeline] == [
        ("execute", "create_account", "done"),
        ("wait", "cooling_off", "done"),
        ("continue if", "email_verified", "waiting"),
    ]
    assert page.timeline[2].current
    assert (page.wait.kind, page.wait.condition, page.wait.timeout_at) == (
        "event",
        "email_verified",
        None,
    )
    waiting = client.get(url("waiting")).context["items"]
    assert [(i["workflow"].key, i["wait"].kind) for i in waiting] == [("cust-1", "event")]
    listed = client.get(reverse("admin:chrono_forge_workflow_changelist") + "?wait=event")
    assert [w.key for w in listed.context["cl"].result_list] == ["cust-1"]

    wa.CALLS["verified"] = True
    assert client.post(url("resume", workflow.pk)).status_code == 303
    chrono_forge_env.run_due()  # the event gate opens; wait_until polls once and schedules a check
    page = client.get(url("change", workflow.pk)).context["page"]
    assert page.wait.kind == "poll" and page.wait.condition == "carrier_picked_up"
    assert page.wait.timeout_at is not None
    row = page.timeline[-1]
    assert (row.step.label, row.status) == ("wait until", "waiting")
    assert ("check interval", "10m 00s") in row.metadata
    assert client.get(url("change", workflow.pk)).context["status"]["label"] == "scheduled"

    wa.CALLS["picked"] = True
    chrono_forge_env.run_all()
    page = client.get(url("change", workflow.pk)).context["page"]
    assert [(r.step.label, r.status) for r in page.timeline] == [
        ("execute", "done"),
        ("wait", "done"),
        ("continue if", "done"),
        ("wait until", "done"),
        ("workflow", "done"),
    ]
    assert page.wait is None and page.timeline[-1].step.name == "completed"


def test_periodic_task_summary_and_repetitions(client, chrono_forge_env):
    wa.PriceFeed.perform_later("feed")
    chrono_forge_env.run_all()
    workflow = Workflow.objects.get()
    assert workflow.state == "completed"
    page = client.get(url("change", workflow.pk)).context["page"]
    assert [r.step.label for r in page.timeline] == ["repeat", "workflow"]  # repetitions excluded
    (task,) = page.periodic
    assert (task.name, task.iterations, task.missed, task.failed) == ("poll_prices", 3, 0, 0)
    assert task.last_run is not None
    response = client.get(url("repetitions", workflow.pk) + "?step=poll_prices")
    assert [item["status"] for item in response.context["items"]] == ["done", "done", "done"]
    assert all(item["late_text"] == "on time" for item in response.context["items"])


def test_branch_panel_children_page_and_branch_retry(client, chrono_forge_env):
    wa.NightlyFanOut.perform_later("night")
    for _ in range(6):  # children run, the poller polls; a failed child holds the merge
        chrono_forge_env.run_due()
        chrono_forge_env.advance(5)
    parent = Workflow.objects.get(key="night")
    assert parent.state == "idle"
    page = client.get(url("change", parent.pk)).context["page"]
    (panel,) = page.branches
    assert (panel.name, panel.sealed, panel.merge_state) == ("stores", True, "merging")
    assert panel.spawned == "4" and panel.blocked == 1
    assert [m.branches for m in page.merges] == [["stores"]]
    # the children page: the failed child only, by default
    response = client.get(url("branch", parent.pk, panel.log.pk))
    assert [row["workflow"].key for row in response.context["rows"]] == ["night$stores$store-2"]
    # the child's breadcrumb leads back to the parent and its branch
    child = Workflow.objects.get(key="night$stores$store-2")
    body = client.get(url("change", child.pk)).content.decode()
    assert url("branch", parent.pk, panel.log.pk) in body and "branch stores" in body
    # retry all blocked in this branch: one task; running it retries the child; the merge completes
    wa.CALLS["store_fixed"] = True
    client.post(url("bulk_retry"), {"branch_log_id": panel.log.pk})
    tasks = [
        r
        for r in chrono_forge_env.pending
        if r.func == "chrono_forge.operations.bulk_retry_blocked"
    ]
    assert len(tasks) == 1 and tasks[0].kwargs == {"branch_log_id": panel.log.pk}
    chrono_forge_env.run_all()
    parent.refresh_from_db()
    assert parent.state == "completed"
    page = client.get(url("change", parent.pk)).context["page"]
    assert page.branches[0].merge_state == "merged" and page.branches[0].blocked == 0
    # a merged branch is no longer "polling"
    body = client.get(url("change", parent.pk)).content.decode()
    assert ">polling<" not in body


def test_a_finished_wait_shows_no_attempts_badge(client, chrono_forge_env):
    wa.Onboarding.perform_later("cust-9", customer_id=9)
    chrono_forge_env.run_all()
    workflow = Workflow.objects.get()
    page = client.get(url("change", workflow.pk)).context["page"]
    (cooling,) = [r for r in page.timeline if r.step.name == "cooling_off"]
    assert cooling.status == "done" and cooling.log.attempts >= 2  # scheduled, then looked at
    assert (cooling.attempts_text, cooling.attempts_tone) == ("", "")
    assert "2 attempts" not in client.get(url("change", workflow.pk)).content.decode()


def test_the_waiting_banner_names_the_step_and_its_condition(client, chrono_forge_env):
    wa.ManualApproval.perform_later("approval-1")
    chrono_forge_env.run_all()
    workflow = Workflow.objects.get()
    assert workflow.state == "idle"
    response = client.get(url("change", workflow.pk))
    page = response.context["page"]
    assert (page.wait.step, page.wait.condition) == ("manual_approval", "is_approved")
    body = response.content.decode()
    assert "Step <strong>manual_approval</strong>" in body
    assert "<code>continue_if$manual_approval</code>" in body
    assert "on <code>is_approved</code>" in body


def test_retry_all_blocked_is_offered_only_when_something_is_blocked(
    client, chrono_forge_env, admin_user
):
    client.force_login(admin_user)
    changelist = reverse("admin:chrono_forge_workflow_changelist")
    wa.Quick.perform_later("fine")
    chrono_forge_env.run_all()
    assert "Retry all blocked" not in client.get(changelist).content.decode()
    wa.FlakyCharge.perform_later("declined")
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="declined").state == "stalled"
    assert "Retry all blocked" in client.get(changelist).content.decode()
