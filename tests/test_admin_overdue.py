"""Stuck detection in the admin: the Overdue page lists exactly what ``resume-overdue`` would
re-send, each row with why it waits and a one-click fix; the workflow page says why a run waits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from chrono_forge.models import Workflow
from tests import workflows_liveness as wl
from tests.core_sql import capture
from tests.helpers import flash

pytestmark = pytest.mark.django_db

LIST = reverse("admin:chrono_forge_workflow_changelist")
LATE = timedelta(minutes=6)  # past RESUME_OVERDUE_GRACE (5 minutes)


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


def text(response) -> str:
    return response.content.decode()


def lost_first_delivery(env, key="lost"):
    wl.Quick.perform_later(key)
    env.drop_pending()
    return Workflow.objects.get(key=key)


def lost_merge_poll(env, key="fan"):
    wl.Fan.perform_later(key)
    env.run_due()  # the parent parks at its merge, the children at their nap
    assert env.drop_pending(lambda run: run.is_merge_poll) == 1
    env.run_all()  # the children complete; the poller is gone
    return Workflow.objects.get(key=key)


def parked(env, key="gate"):
    wl.Gated.perform_later(key)
    env.run_all()
    return Workflow.objects.get(key=key)


def lost_retry(env, key="card"):
    wl.Stalls.perform_later(key)
    env.run_all()
    wl.FLAGS["fixed"] = True
    Workflow.objects.get(key=key).retry_later()
    env.drop_pending()
    return Workflow.objects.get(key=key)


def test_the_overdue_page_lists_exactly_what_the_sweep_re_sends(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as()
    first = lost_first_delivery(env)
    fan = lost_merge_poll(env)
    retry = lost_retry(env)
    gate = parked(env)
    env.advance(LATE)
    fresh = lost_first_delivery(env, key="fresh")  # lost too, but not late yet
    response = client.get(url("overdue"))
    assert response.status_code == 200
    listed = {item["workflow"].key: item["reason"].kind for item in response.context["items"]}
    assert listed == {"lost": "first_pass", "fan": "merge_poll", "card": "retry"}
    assert set(listed) == set(Workflow.objects.overdue().values_list("key", flat=True))
    body = text(response)
    assert "first pass not started since" in body
    assert "merge poll overdue" in body
    assert "operator retry requested" in body
    assert gate.key not in listed and fresh.key not in listed
    assert {first.pk, fan.pk, retry.pk} == {i["workflow"].pk for i in response.context["items"]}


def test_the_one_click_fix_re_sends_the_delivery_and_the_run_completes(
    client, chrono_forge_env, login_as
):
    env = chrono_forge_env
    login_as("resume_workflow")
    first = lost_first_delivery(env)
    fan = lost_merge_poll(env)
    retry = lost_retry(env)
    env.advance(LATE)
    for workflow in (first, fan, retry):
        response = client.post(url("redeliver", workflow.pk), {"next": url("overdue")})
        assert response.status_code == 303 and response["Location"] == url("overdue")
        assert flash(response) == [f"{workflow}: its overdue delivery was sent again."]
    assert len(env.pending) == 3
    env.run_all()
    assert {w.key: w.state for w in Workflow.objects.filter(parent_execution_log=None)} == {
        "lost": "completed",
        "fan": "completed",
        "card": "completed",
    }
    assert client.get(url("overdue")).context["items"] == []


def test_the_fix_refuses_a_row_that_is_not_overdue(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as("resume_workflow")
    gate = parked(env)
    fresh = lost_first_delivery(env, key="fresh")
    for workflow in (gate, fresh):
        response = client.post(url("redeliver", workflow.pk))
        assert response.status_code == 303
        [message] = flash(response)
        assert "is not overdue" in message and "RESUME_OVERDUE_GRACE" in message
    assert env.pending == []


def test_the_fix_needs_the_resume_permission_and_a_post(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as()
    first = lost_first_delivery(env)
    env.advance(LATE)
    assert client.post(url("redeliver", first.pk)).status_code == 403
    assert client.post(url("resume_overdue_all")).status_code == 403
    assert client.get(url("redeliver", first.pk)).status_code == 405
    assert env.pending == []
    assert "Send again" not in text(client.get(url("overdue")))


def test_send_all_again_runs_the_sweep_as_one_background_task(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as("resume_workflow")
    lost_first_delivery(env, key="a")
    lost_first_delivery(env, key="b")
    env.advance(LATE)
    response = client.post(url("resume_overdue_all"))
    assert response.status_code == 303 and response["Location"] == url("overdue")
    assert flash(response) == ["Re-sending 2 overdue delivery(ies) in the background."]
    [task] = env.pending
    assert task.func == "chrono_forge.maintenance.resume_overdue"
    env.run_all()
    assert set(Workflow.objects.values_list("state", flat=True)) == {"completed"}
    response = client.post(url("resume_overdue_all"))
    assert flash(response) == ["No overdue workflows."] and env.pending == []


@pytest.mark.parametrize(
    "make, late, expected",
    [
        (lost_first_delivery, True, "First pass not started since"),
        (lost_merge_poll, True, "Merge poll overdue: it was due"),
        (lost_retry, True, "Operator retry requested, not started since"),
        (parked, False, "Parked on event continue_if$approved since"),
    ],
)
def test_the_workflow_page_says_why_a_run_waits(
    client, chrono_forge_env, make, late, expected, login_as
):
    env = chrono_forge_env
    login_as("resume_workflow")
    workflow = make(env)
    if late:
        env.advance(LATE)
    response = client.get(url("change", workflow.pk))
    body = text(response)
    assert expected in body
    assert ("Send again" in body) is late
    assert response.context["page"].liveness.overdue is late


def test_the_workflow_page_of_a_healthy_scheduled_run(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as()
    wl.Fan.perform_later("fan")
    env.run_due()  # parked at its merge, the poll due in 5 s
    response = client.get(url("change", Workflow.objects.get(key="fan").pk))
    why = response.context["page"].liveness
    assert (why.kind, why.overdue) == ("merge_poll", False)
    assert "Merge poll due" in text(response) and "Send again" not in text(response)


def test_the_liveness_filter(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as()
    lost_first_delivery(env)
    parked(env)
    env.advance(LATE)

    def keys(value):
        response = client.get(LIST, {"liveness": value})
        return sorted(w.key for w in response.context["cl"].result_list)

    assert keys("overdue") == ["lost"]
    assert keys("parked") == ["gate"]
    assert keys("never_started") == ["lost"]
    status = client.get(url("change", Workflow.objects.get(key="gate").pk)).context["status"]
    assert status["label"] == "parked"


def test_the_overdue_page_costs_the_same_for_3_and_30_rows(client, chrono_forge_env, login_as):
    env = chrono_forge_env
    login_as()
    sizes = {}
    for n in (3, 30):
        Workflow.objects.all().delete()
        for i in range(n):
            lost_first_delivery(env, key=f"k{n}-{i}")
        env.advance(LATE)
        with capture() as queries:
            assert len(client.get(url("overdue")).context["items"]) == n
        sizes[n] = len(queries.captured_queries)
    assert sizes[3] == sizes[30]


# -- the command's list ----------------------------------------------------------------------------
def listed(*args: str) -> dict[str, str]:
    """KEY -> WAITING of ``chrono_forge list``."""
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("chrono_forge", "list", "--limit", "100", *args, stdout=out, no_color=True)
    lines = out.getvalue().splitlines()
    header = lines[0].split()
    assert header[:5] == ["ID", "CLASS", "KEY", "STATE", "WAITING"]
    return {line.split()[2]: line.split()[4] for line in lines[1:] if not line.startswith("(")}


def test_list_shows_parked_overdue_and_scheduled_runs(chrono_forge_env):
    env = chrono_forge_env
    lost_first_delivery(env)
    lost_merge_poll(env)
    lost_retry(env)
    parked(env)
    wl.Quick.perform_later("done")
    env.run_all()
    env.advance(LATE)
    wl.Quick.perform_later("queued")  # scheduled now, not late
    rows = listed()
    assert rows["lost"] == "first-pass!OVERDUE"
    assert rows["fan"] == "merge-poll!OVERDUE"
    assert rows["card"] == "retry-requested!OVERDUE"
    assert rows["gate"] == "parked:continue_if$approved"
    assert rows["queued"] == "first-pass"
    assert rows["done"] == "-"
    assert sorted(listed("--overdue")) == ["card", "fan", "lost"]
    assert sorted(listed("--parked")) == ["gate"]


def test_list_flags_a_stranded_lock_and_a_row_nothing_will_wake(chrono_forge_env):
    env = chrono_forge_env
    wl.Quick.perform_later("stuck")
    env.drop_pending()
    Workflow.objects.filter(key="stuck").update(
        state="running", locked_by="dead", locked_at=env.now - timedelta(hours=1)
    )
    wl.Quick.perform_later("forced")
    env.drop_pending()
    Workflow.objects.filter(key="forced").update(next_run_at=None, modified=env.now)
    rows = listed()
    assert rows["stuck"] == "STRANDED"
    assert rows["forced"] == "NOTHING-SCHEDULED"
    env.advance(LATE)
    assert listed()["forced"] == "NOTHING-SCHEDULED!OVERDUE"
    assert sorted(listed("--overdue")) == ["forced"]


def test_the_list_badge_says_overdue_only_past_the_grace(client, login_as):
    """A scheduled run late by more than RESUME_OVERDUE_GRACE wears an amber "overdue" badge naming
    what was due; one late by less, or due later, does not."""
    from chrono_forge import clock

    now = clock.now()
    job_class = "tests.workflows_liveness.Quick"
    Workflow.objects.create(job_class=job_class, key="late-first", next_run_at=now - LATE)
    Workflow.objects.create(
        job_class=job_class, key="late-next", next_run_at=now - LATE, started_at=now - 2 * LATE
    )
    Workflow.objects.create(
        job_class=job_class, key="just-late", next_run_at=now - timedelta(minutes=1)
    )
    Workflow.objects.create(job_class=job_class, key="later", next_run_at=now + LATE)
    login_as()
    html = text(client.get(LIST))
    assert html.count('<span class="cf-pill cf-amber" title="its first pass was due') == 1
    assert html.count('<span class="cf-pill cf-amber" title="its next pass was due') == 1
    assert html.count(">overdue</span>") == 2
    assert '<span class="cf-pill cf-sky" title="next pass at' in html  # "later": scheduled
