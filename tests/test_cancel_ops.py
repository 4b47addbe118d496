"""Cancellation from the operator's side: the admin's Cancel page and bulk action (permission,
confirmation, reason), the command's ``cancel`` and ``show``, the Overview's count and retention."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from chrono_forge import cleanup, clock
from chrono_forge.models import Workflow
from tests import workflows_cancel as wc
from tests.helpers import flash

pytestmark = pytest.mark.django_db


def idle_run(key: str) -> Workflow:
    wc.TwoSteps.perform_later(key, wait=60)
    return Workflow.objects.get(key=key)


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("chrono_forge", *args, stdout=out, stderr=io.StringIO(), no_color=True)
    return out.getvalue()


# -- admin -----------------------------------------------------------------------------------------
def test_the_cancel_page_confirms_then_cancels_with_the_reason(client, login_as):
    login_as("cancel_workflow")
    wf = idle_run("adm-1")
    page = reverse("admin:chrono_forge_workflow_cancel", args=[wf.pk])
    html = client.get(page).content.decode()
    assert "Yes, cancel" in html and 'name="reason"' in html
    wf.refresh_from_db()
    assert wf.state == "idle"  # a GET changes nothing
    response = client.post(page, {"reason": "refunded by hand"})
    assert response.status_code == 303
    assert " ".join(flash(response)) == f"{wf} was cancelled."
    wf.refresh_from_db()
    assert (wf.state, wf.cancel_reason) == ("cancelled", "refunded by hand")
    html = client.get(reverse("admin:chrono_forge_workflow_change", args=[wf.pk])).content
    assert "refunded by hand" in html.decode()


def test_the_cancel_page_needs_the_cancel_permission(client, login_as):
    login_as("retry_workflow")
    wf = idle_run("adm-2")
    page = reverse("admin:chrono_forge_workflow_cancel", args=[wf.pk])
    assert client.get(page).status_code == 403
    assert client.post(page, {"reason": "x"}).status_code == 403
    wf.refresh_from_db()
    assert wf.state == "idle"


def test_a_reason_that_is_too_long_cancels_nothing_and_says_why(client, login_as):
    login_as("cancel_workflow")
    wf = idle_run("adm-3")
    page = reverse("admin:chrono_forge_workflow_cancel", args=[wf.pk])
    response = client.post(page, {"reason": "x" * 1000})
    assert "Nothing was cancelled" in " ".join(flash(response))
    wf.refresh_from_db()
    assert wf.state == "idle"


def test_the_bulk_action_cancels_the_selected_unfinished_runs(client, login_as):
    login_as("cancel_workflow")
    first, second = idle_run("bulk-1"), idle_run("bulk-2")
    done = wc.TwoSteps.perform_now("bulk-3")
    assert done.state == "completed"
    response = client.post(
        reverse("admin:chrono_forge_workflow_changelist"),
        {
            "action": "cancel_selected",
            "_selected_action": [first.pk, second.pk, done.pk],
            "post": "yes",
            "reason": "batch stop",
        },
        follow=True,
    )
    assert response.status_code == 200
    states = dict(Workflow.objects.values_list("key", "state"))
    assert (states["bulk-1"], states["bulk-2"], states["bulk-3"]) == (
        "cancelled",
        "cancelled",
        "completed",
    )


def test_the_overview_counts_cancelled_runs(client, operator):
    idle_run("ov-1").cancel("stop")
    html = client.get(reverse("admin:chrono_forge_workflow_overview")).content.decode()
    assert "Cancelled" in html and "state=cancelled" in html


# -- command ---------------------------------------------------------------------------------------
def test_the_command_cancels_a_run_and_show_prints_the_reason():
    idle_run("cli-1")
    out = command("cancel", "cli-1", "--reason", "customer asked")
    assert "Cancelled" in out and "cli-1" in out
    assert Workflow.objects.get(key="cli-1").state == "cancelled"
    shown = command("show", "cli-1")
    assert "cancelled:" in shown and "customer asked" in shown


def test_the_command_refuses_a_finished_run_with_its_state():
    wc.TwoSteps.perform_now("cli-2")
    with pytest.raises(CommandError, match="completed"):
        command("cancel", "cli-2")


def test_the_command_refuses_a_reason_that_is_too_long_before_touching_the_run():
    idle_run("cli-3")
    with pytest.raises(CommandError):
        command("cancel", "cli-3", "--reason", "x" * 1000)
    assert Workflow.objects.get(key="cli-3").state == "idle"


# -- retention -------------------------------------------------------------------------------------
def test_cleanup_deletes_cancelled_runs_past_the_window_and_keeps_recent_ones():
    old, recent = idle_run("ret-1"), idle_run("ret-2")
    old.cancel("old")
    recent.cancel("recent")
    Workflow.objects.filter(pk=old.pk).update(cancelled_at=clock.now() - timedelta(days=100))
    counts = cleanup.run(older_than=timedelta(days=90))
    assert counts["workflows"] == 1
    assert list(Workflow.objects.values_list("key", flat=True)) == ["ret-2"]
