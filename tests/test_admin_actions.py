"""Operator actions: permissions, guards, messages (never a 500), POST-only, 303 redirects, and the
bulk actions enqueue exactly one background task."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from chrono_forge import clock, operations
from chrono_forge.dispatch import TASK
from chrono_forge.executor import token_for
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_admin as wa
from tests.admin_fixtures import FLAKY, QUICK, make_log, make_workflow
from tests.factories import log_in_operator
from tests.helpers import flash

pytestmark = pytest.mark.django_db

LIST = reverse("admin:chrono_forge_workflow_changelist")


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


def run_task_only(env):
    """Run the one pending background task, leaving the passes it enqueues pending."""
    task = env.dispatcher.pop_due(env.now)
    env._run(task)
    return task


def stranded_workflow(**fields):
    return make_workflow(
        "running",
        job_class=QUICK,
        locked_by="dead-worker",
        locked_at=clock.now() - timedelta(hours=1),
        **fields,
    )


# -- single-workflow actions -----------------------------------------------------------------------
def test_retry_a_stalled_workflow_end_to_end(client, chrono_forge_env, login_as):
    login_as("retry_workflow")
    wa.FlakyCharge.perform_later("order-1", order_id=1)
    chrono_forge_env.run_all()
    workflow = Workflow.objects.get()
    assert workflow.state == "stalled"
    wa.CALLS["fixed"] = 1
    response = client.post(url("retry", workflow.pk))
    assert response.status_code == 303
    assert response["Location"] == url("change", workflow.pk)
    assert flash(response) == ["FlakyCharge(order-1) will be retried shortly."]
    (run,) = chrono_forge_env.pending
    # the retry request is the row's due time, carried as the delivery's token
    token = token_for(Workflow.objects.get().next_run_at)
    assert (run.job_class, run.key, run.internal) == (
        FLAKY,
        "order-1",
        {"retry_workflow": True, "token": token},
    )
    chrono_forge_env.run_all()
    workflow.refresh_from_db()
    assert workflow.state == "completed"


@pytest.mark.parametrize("state", ["idle", "running", "completed"])
def test_retry_refuses_with_a_message(client, chrono_forge_env, state, login_as):
    login_as("retry_workflow")
    workflow = make_workflow(state, job_class=QUICK)
    response = client.post(url("retry", workflow.pk))
    assert response.status_code == 303
    (message,) = flash(response)
    assert f"is {state}; only failed or stalled workflows can be retried" in message
    assert chrono_forge_env.pending == []


def test_retry_of_a_class_that_no_longer_imports_is_a_message(client, chrono_forge_env, login_as):
    login_as("retry_workflow")
    workflow = make_workflow("stalled", job_class="tests.gone.Nope")
    response = client.post(url("retry", workflow.pk))
    assert response.status_code == 303
    assert "is not a registered workflow class" in flash(response)[0]
    assert chrono_forge_env.pending == []


def test_resume_only_idle(client, chrono_forge_env, login_as):
    login_as("resume_workflow")
    idle = make_workflow("idle", job_class=QUICK)
    response = client.post(url("resume", idle.pk))
    assert response.status_code == 303 and flash(response) == [
        f"Resumed {idle}: a pass is enqueued."
    ]
    assert [(r.job_class, r.key) for r in chrono_forge_env.pending] == [(QUICK, idle.key)]
    chrono_forge_env.drop_pending()
    done = make_workflow("completed", job_class=QUICK)
    response = client.post(url("resume", done.pk))
    assert "only idle workflows can be resumed" in flash(response)[0]
    assert chrono_forge_env.pending == []


@pytest.mark.parametrize(
    ("action", "perm", "state"),
    [("resume", "resume_workflow", "stalled"), ("retry", "retry_workflow", "idle")],
)
def test_the_admin_and_the_command_give_the_same_refusal(
    client, chrono_forge_env, login_as, action, perm, state
):
    """One operations layer owns each action's precondition and message: both surfaces say it."""
    login_as(perm)
    workflow = make_workflow(state, job_class=QUICK)
    [shown] = flash(client.post(url(action, workflow.pk)))
    with pytest.raises(CommandError) as refused:
        call_command("chrono_forge", action, workflow.key, stdout=io.StringIO())
    assert str(refused.value) == shown
    assert f"{workflow} is {state}; only " in shown and "`chrono_forge " in shown
    assert chrono_forge_env.pending == []


def test_reap_only_stranded(client, chrono_forge_env, login_as):
    login_as("reap_workflow")
    fresh = make_workflow("running", job_class=QUICK)
    response = client.post(url("reap", fresh.pk))
    assert response.status_code == 303 and "is not stranded" in flash(response)[0]
    assert chrono_forge_env.pending == []
    dead = stranded_workflow()
    response = client.post(url("reap", dead.pk), {"next": url("stranded")})
    assert response.status_code == 303 and response["Location"] == url("stranded")
    assert "re-enqueued" in flash(response)[0]
    assert [(r.job_class, r.key) for r in chrono_forge_env.pending] == [(QUICK, dead.key)]
    chrono_forge_env.run_all()  # the pass steals the stale lock and completes
    dead.refresh_from_db()
    assert dead.state == "completed"


def test_redirect_target_must_be_local(client, chrono_forge_env, login_as):
    login_as("reap_workflow")
    dead = stranded_workflow()
    response = client.post(url("reap", dead.pk), {"next": "https://evil.example/"})
    assert response["Location"] == url("change", dead.pk)


def test_force_unlock_confirmation_then_unlock(client, chrono_forge_env, login_as):
    login_as("force_unlock_workflow")
    running = make_workflow("running", job_class=QUICK)
    page = client.get(url("force_unlock", running.pk))
    assert page.status_code == 200
    assert "steps can execute twice" in page.content.decode()
    running.refresh_from_db()
    assert running.state == "running"  # GET changes nothing
    response = client.post(url("force_unlock", running.pk))
    assert response.status_code == 303
    running.refresh_from_db()
    assert (running.state, running.locked_by, running.locked_at) == ("idle", None, None)
    assert "unlocked" in flash(response)[0]
    response = client.post(url("force_unlock", running.pk))
    assert "only running workflows can be force-unlocked" in flash(response)[0]
    assert chrono_forge_env.pending == []


@pytest.mark.parametrize(
    "name, codename",
    [
        ("retry", "retry_workflow"),
        ("resume", "resume_workflow"),
        ("reap", "reap_workflow"),
        ("force_unlock", "force_unlock_workflow"),
    ],
)
def test_actions_need_their_permission_and_post(client, chrono_forge_env, name, codename, login_as):
    workflow = make_workflow("stalled", job_class=QUICK)
    login_as()  # view only
    assert client.post(url(name, workflow.pk)).status_code == 403
    client.logout()
    login_as(codename)
    if name != "force_unlock":  # force unlock's GET is its confirmation page
        assert client.get(url(name, workflow.pk)).status_code == 405
    assert chrono_forge_env.pending == []


def test_actions_need_a_csrf_token(chrono_forge_env):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    log_in_operator(client)
    workflow = make_workflow("stalled", job_class=QUICK)
    assert client.post(url("retry", workflow.pk)).status_code == 403
    assert client.post(url("bulk_retry")).status_code == 403
    assert chrono_forge_env.pending == []


def test_unknown_workflow_is_a_message(client, chrono_forge_env, login_as):
    login_as("retry_workflow")
    response = client.post(url("retry", 987654))
    assert response.status_code == 303 and response["Location"] == LIST
    assert "does not exist" in flash(response)[0]


def test_anonymous_post_is_redirected_to_login(client, chrono_forge_env):
    workflow = make_workflow("stalled", job_class=QUICK)
    response = client.post(url("retry", workflow.pk))
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    assert chrono_forge_env.pending == []


# -- bulk actions: one background task -------------------------------------------------------------
def test_bulk_retry_enqueues_one_task_with_the_count(client, chrono_forge_env, login_as):
    login_as("bulk_retry_workflows")
    for _ in range(3):
        make_workflow("stalled", job_class=FLAKY)
    make_workflow("failed", job_class=QUICK)
    make_workflow("completed", job_class=QUICK)
    response = client.post(url("bulk_retry"))
    assert response.status_code == 303 and response["Location"] == LIST
    assert flash(response) == ["Retrying 4 blocked workflow(s) in the background."]
    (task,) = chrono_forge_env.pending
    assert (task.func, task.args, task.kwargs) == (
        "chrono_forge.operations.bulk_retry_blocked",
        (),
        {},
    )
    run_task_only(chrono_forge_env)  # the task retries each blocked workflow through the queue
    passes = [r for r in chrono_forge_env.pending if r.func == TASK]
    assert len(passes) == 4 and all(r.internal["retry_workflow"] is True for r in passes)
    assert all(set(r.internal) == {"retry_workflow", "token"} for r in passes)


def test_bulk_retry_with_nothing_to_do_enqueues_nothing(client, chrono_forge_env, login_as):
    login_as("bulk_retry_workflows")
    make_workflow("completed")
    response = client.post(url("bulk_retry"))
    assert response.status_code == 303
    assert flash(response) == ["No blocked workflows to retry."]
    assert chrono_forge_env.pending == []


def test_bulk_retry_of_one_branch(client, chrono_forge_env, login_as):
    login_as("bulk_retry_workflows")
    parent = make_workflow("idle", key="fan")
    branch = make_log(parent, "branch$items", "pending")
    other = make_log(parent, "branch$other", "pending")
    make_workflow("stalled", job_class=QUICK, parent_execution_log=branch)
    make_workflow("stalled", job_class=QUICK, parent_execution_log=other)
    back = url("branch", parent.pk, branch.pk)
    response = client.post(url("bulk_retry"), {"branch_log_id": branch.pk, "next": back})
    assert response["Location"] == back
    assert flash(response) == ["Retrying 1 blocked workflow(s) in the background."]
    (task,) = chrono_forge_env.pending
    assert task.kwargs == {"branch_log_id": branch.pk}
    assert operations.bulk_retry_blocked(branch_log_id=branch.pk) == 1


def test_bulk_retry_needs_its_permission(client, chrono_forge_env, login_as):
    login_as("retry_workflow")
    make_workflow("stalled")
    assert client.post(url("bulk_retry")).status_code == 403
    assert client.get(url("bulk_retry")).status_code in (403, 405)
    assert chrono_forge_env.pending == []


def test_reap_all_enqueues_one_task(client, chrono_forge_env, login_as):
    login_as("reap_workflow")
    response = client.post(url("reap_all"))
    assert flash(response) == ["No stranded workflows to reap."] and chrono_forge_env.pending == []
    stranded_workflow()
    stranded_workflow()
    make_workflow("running", job_class=QUICK)
    response = client.post(url("reap_all"))
    assert response.status_code == 303 and response["Location"] == url("stranded")
    assert flash(response) == ["Reaping 2 stranded workflow(s) in the background."]
    (task,) = chrono_forge_env.pending
    assert task.func == "chrono_forge.operations.reap_all"
    chrono_forge_env.run_due()
    assert Workflow.objects.filter(state="completed").count() == 2


def test_operations_skip_rows_that_fail(chrono_forge_env, caplog):
    make_workflow("stalled", job_class="tests.gone.Nope")
    make_workflow("stalled", job_class=QUICK)
    assert operations.bulk_retry_blocked() == 1
    assert "bulk retry skipped" in caplog.text
    stranded_workflow()
    assert operations.reap_all() == 1


# -- admin actions on selected rows ----------------------------------------------------------------
def test_selected_row_actions_report_done_and_skipped(client, operator, chrono_forge_env):
    stalled = make_workflow("stalled", job_class=QUICK)
    done = make_workflow("completed", job_class=QUICK)
    response = client.post(
        LIST, {"action": "retry_selected", "_selected_action": [stalled.pk, done.pk]}
    )
    assert response.status_code == 303
    assert flash(response) == [
        "Retrying 1 workflow(s).",
        "Skipped 1 workflow(s): only failed or stalled workflows can be retried.",
    ]
    assert [r.key for r in chrono_forge_env.pending] == [stalled.key]


def test_force_unlock_selected_asks_first(client, operator, chrono_forge_env):
    running = make_workflow("running", job_class=QUICK)
    data = {"action": "force_unlock_selected", "_selected_action": [running.pk]}
    page = client.post(LIST, data)
    assert page.status_code == 200 and "steps can execute twice" in page.content.decode()
    running.refresh_from_db()
    assert running.state == "running"
    response = client.post(LIST, {**data, "post": "yes"})
    assert response.status_code == 303
    running.refresh_from_db()
    assert running.state == "idle"


def test_selected_actions_are_hidden_without_permission(client, login_as):
    login_as()
    make_workflow("stalled")
    response = client.get(LIST)
    assert "retry_selected" not in response.content.decode()
    login_as("retry_workflow")
    response = client.get(LIST)
    assert "retry_selected" in response.content.decode()
    assert "force_unlock_selected" not in response.content.decode()


def test_nothing_is_editable(client, operator):
    workflow = make_workflow("stalled")
    assert client.get(reverse("admin:chrono_forge_workflow_add")).status_code == 403
    assert (
        client.post(
            reverse("admin:chrono_forge_workflow_change", args=[workflow.pk]), {"key": "x"}
        ).status_code
        == 403
    )
    assert (
        client.get(reverse("admin:chrono_forge_workflow_delete", args=[workflow.pk])).status_code
        == 403
    )
    log = make_log(workflow, "durably_execute$x")
    assert (
        client.post(
            reverse("admin:chrono_forge_executionlog_change", args=[log.pk]), {}
        ).status_code
        == 403
    )
    assert ExecutionLog.objects.filter(pk=log.pk).exists()
