"""Messages in operations: cleanup deletes a finished workflow's messages with it (and keeps an
unfinished one's)."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from chrono_forge import cleanup
from chrono_forge.models import ExecutionLog, Message, Workflow
from tests import workflows_messages as wm

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


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


def test_the_workflow_page_lists_its_messages_and_the_consuming_step(
    client, operator, chrono_forge_env
):
    wf = wm.Loop.perform_later("page", count=1)
    wm.Loop.send("page", "item", {"sku": "A-1"}, idempotency_key="evt-9")
    wm.Loop.send("page", "item", "second")
    chrono_forge_env.run_all()
    page = client.get(admin_url("change", wf.pk)).content.decode()
    assert "<h2>Messages" in page
    assert 'cf-pill cf-green">consumed' in page and 'cf-pill cf-violet">pending' in page
    assert "receive$item-0" in page and "evt-9" in page
    assert "{&quot;sku&quot;: &quot;A-1&quot;}" in page and "&quot;second&quot;" in page


def test_a_workflow_page_without_messages_has_no_messages_section(
    client, operator, chrono_forge_env
):
    wf = wm.Inbox.perform_later("quiet")
    chrono_forge_env.run_all()
    assert "<h2>Messages" not in client.get(admin_url("change", wf.pk)).content.decode()


# -- the command -----------------------------------------------------------------------------------
def command(*args):
    out = io.StringIO()
    call_command("chrono_forge", *args, stdout=out, stderr=io.StringIO(), no_color=True)
    return out.getvalue().strip()


def test_chrono_forge_send_delivers_a_message(chrono_forge_env):
    wf = wm.Inbox.perform_later("cli")
    chrono_forge_env.run_all()
    out = command("send", "cli", "payment", "--json", '{"amount": 5}', "--idempotency-key", "e1")
    message = Message.objects.get()
    assert out == f"Sent message #{message.pk} (payment) to Inbox(cli)."
    again = command("send", "cli", "payment", "--json", "6", "--idempotency-key", "e1")
    assert again == (
        f"Inbox(cli) already has message #{message.pk} with idempotency key 'e1': nothing stored."
    )
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed" and wf.context["payment"] == {"amount": 5}


@pytest.mark.parametrize(
    "args, match",
    [
        (["send", "nope", "t", "--json", "1"], "No workflow with key 'nope'"),
        (["send", "cli", "t", "--json", "{oops"], "argument --json: not valid JSON"),
        (["send", "cli", "t"], "the following arguments are required: --json"),
        (["send", "cli", "a$b", "--json", "1"], r"Inbox\(cli\) a\$b: message topic 'a\$b'"),
        (["send", "cli", "t", "--json", "NaN"], r"message payload: nan is not a JSON number"),
        (["send", "cli", "t", "--json", "1", "--idempotency-key", ""], "must not be empty"),
    ],
)
def test_chrono_forge_send_refuses_bad_input_and_stores_nothing(chrono_forge_env, args, match):
    wm.Inbox.perform_later("cli")
    with pytest.raises(CommandError, match=match):
        command(*args)
    assert Message.objects.count() == 0


def test_chrono_forge_send_to_a_completed_run_is_refused(chrono_forge_env):
    wm.Inbox.perform_later("cli")
    wm.Inbox.send("cli", "payment", 1)
    chrono_forge_env.run_all()
    with pytest.raises(CommandError, match=r"Inbox\(cli\) is completed"):
        command("send", "cli", "payment", "--json", "2")
    assert Message.objects.count() == 1


def test_graph_lists_receives_and_sends_named_as_at_run_time():
    from chrono_forge.graph import durable_steps

    steps, warnings = durable_steps(wm.Sender)
    assert [s.step_name for s in steps] == ["send_to$payment", "receive$ack"]
    assert [s.notes for s in steps] == [["sends a message"], ["parks until a message of its topic"]]
    loop, _ = durable_steps(wm.Loop)
    assert [s.step_name for s in loop] == ["receive$*"]  # name=f"item-{i}": known at run time
    assert warnings == []
