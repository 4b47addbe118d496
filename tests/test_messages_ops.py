"""Messages in operations: cleanup deletes a finished workflow's messages with it (and keeps an
unfinished one's)."""

from datetime import timedelta

import pytest
from django.urls import reverse

from chrono_forge import cleanup
from chrono_forge.models import ExecutionLog, Message, Workflow
from tests import workflows_messages as wm

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def _reset():
    wm.reset()


def test_cleanup_deletes_a_finished_workflows_messages_with_it(chrono_forge_env):
    done = wm.Loop.perform_later("done", count=1)
    wm.Loop.send("done", "item", "consumed")
    chrono_forge_env.run_all()
    done.refresh_from_db()
    assert done.state == "completed"
    Message.objects.create(workflow=done, topic="item", payload="left over", created=done.created)
    waiting = wm.Inbox.perform_later("waiting")
    wm.Inbox.send("waiting", "other", "pending")
    chrono_forge_env.run_all()
    chrono_forge_env.advance(31 * DAY)

    assert cleanup.run(older_than=30 * DAY, dry_run=True)["messages"] == 2
    result = cleanup.run(older_than=30 * DAY)

    assert result["workflows"] == 1 and result["messages"] == 2
    assert list(Workflow.objects.values_list("key", flat=True)) == ["waiting"]
    assert list(Message.objects.values_list("workflow_id", "payload")) == [(waiting.pk, "pending")]
    assert not ExecutionLog.objects.filter(workflow_id=done.pk).exists()


# -- admin -----------------------------------------------------------------------------------------
def admin_url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


def test_the_waiting_page_lists_a_run_parked_on_a_message(client, operator, chrono_forge_env):
    wf = wm.Inbox.perform_later("waits-for-payment")
    chrono_forge_env.run_all()
    wm.WithTimeout.perform_later("waits-an-answer", seconds=3600)
    chrono_forge_env.run_due()
    chrono_forge_env.advance(2 * 3600)  # both past the long-wait threshold
    body = client.get(admin_url("waiting")).content.decode()
    assert "message payment" in body and "message answer" in body
    assert 'cf-pill cf-violet">message' in body
    # only the receive without a timeout never resumes on its own
    assert "1 event wait stalled beyond 1h 00m" in body
    assert body.index("waits-for-payment") < body.index("waits-an-answer")
    page = client.get(admin_url("change", wf.pk)).content.decode()
    assert "parked on message payment" in page
