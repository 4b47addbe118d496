"""Every admin action URL needs the model's view permission as well as the action's own: a user
missing either gets nothing done, through the per-workflow URLs, the bulk URLs and the changelist
actions alike; a user holding both does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from chrono_forge import clock
from chrono_forge.models import Workflow
from tests.admin_fixtures import QUICK, make_workflow

pytestmark = pytest.mark.django_db

LIST = reverse("admin:chrono_forge_workflow_changelist")


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


def stranded():
    return make_workflow(
        "running",
        job_class=QUICK,
        locked_by="dead-worker",
        locked_at=clock.now() - timedelta(hours=1),
    )


def overdue():
    late = clock.now() - timedelta(hours=1)  # far past RESUME_OVERDUE_GRACE
    return make_workflow("idle", job_class=QUICK, started_at=late, next_run_at=late)


# action -> (codename, the workflow it acts on, method, per-workflow URL name, other URL kind)
ACTIONS = {
    "redeliver": ("resume_workflow", overdue, "POST", "redeliver", None),
    "resume_overdue_all": ("resume_workflow", overdue, "POST", None, "resume_overdue_all"),
    "retry": ("retry_workflow", lambda: make_workflow("stalled"), "POST", "retry", None),
    "resume": ("resume_workflow", lambda: make_workflow("idle"), "POST", "resume", None),
    "reap": ("reap_workflow", stranded, "POST", "reap", None),
    "force_unlock": (
        "force_unlock_workflow",
        lambda: make_workflow("running"),
        "POST",
        "force_unlock",
        None,
    ),
    "force_unlock_page": (
        "force_unlock_workflow",
        lambda: make_workflow("running"),
        "GET",
        "force_unlock",
        None,
    ),
    "bulk_retry": ("bulk_retry_workflows", lambda: make_workflow("stalled"), "POST", None, "bulk"),
    "reap_all": ("reap_workflow", stranded, "POST", None, "reap_all"),
    "retry_selected": ("retry_workflow", lambda: make_workflow("stalled"), "POST", None, "list"),
    "resume_selected": ("resume_workflow", lambda: make_workflow("idle"), "POST", None, "list"),
    "reap_selected": ("reap_workflow", stranded, "POST", None, "list"),
    "force_unlock_selected": (
        "force_unlock_workflow",
        lambda: make_workflow("running"),
        "POST",
        None,
        "list",
    ),
}


def attempt(client, action):
    """Make the request for ``action``; returns (response, workflow before, workflow after)."""
    _, make, method, per_workflow, other = ACTIONS[action]
    workflow = make()
    if per_workflow:
        target, data = url(per_workflow, workflow.pk), {}
    elif other == "bulk":
        target, data = url("bulk_retry"), {}
    elif other in ("reap_all", "resume_overdue_all"):
        target, data = url(other), {}
    else:
        target = LIST
        data = {"action": action, "_selected_action": [workflow.pk], "post": "yes"}
    response = client.get(target) if method == "GET" else client.post(target, data)
    return response, workflow, Workflow.objects.get(pk=workflow.pk)


def acted(env, before, after) -> bool:
    return bool(env.pending) or before.state != after.state


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_the_action_permission_without_view_permission_does_nothing(
    client, chrono_forge_env, action, login_as
):
    login_as(ACTIONS[action][0], view=False)
    response, before, after = attempt(client, action)
    assert response.status_code == 403
    assert not acted(chrono_forge_env, before, after)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_view_permission_without_the_action_permission_does_nothing(
    client, chrono_forge_env, action, login_as
):
    login_as("view_workflow", view=False)
    response, before, after = attempt(client, action)
    if ACTIONS[action][4] == "list":
        # The user has no action to run: Django shows the changelist again and runs nothing.
        assert response.status_code == 200
    else:
        assert response.status_code == 403
    assert not acted(chrono_forge_env, before, after)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_both_permissions_run_the_action(client, chrono_forge_env, action, login_as):
    login_as("view_workflow", ACTIONS[action][0], view=False)
    response, before, after = attempt(client, action)
    if action == "force_unlock_page":
        assert response.status_code == 200 and "Force unlock" in response.content.decode()
    else:
        assert response.status_code == 303
        assert acted(chrono_forge_env, before, after)


def test_buttons_are_hidden_without_view_permission_to_match(client, login_as):
    from django.contrib import admin

    from chrono_forge.admin.views import PERMS

    login_as(*(perm.split(".")[1] for perm in PERMS.values()), view=False)
    model_admin = admin.site._registry[Workflow]
    request = client.get(LIST).wsgi_request
    assert model_admin.action_permissions(request) == {name: False for name in PERMS}
