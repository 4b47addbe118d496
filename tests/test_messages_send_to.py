"""send_to: a workflow sends to another run as a durable step, once across replays, retries and
crashes; a refused target is retried, then stalls; bad arguments stall before anything is stored."""

import pytest

from chrono_forge.crash_safety import CrashTest
from chrono_forge.exceptions import InvalidStepArgument, InvalidStepName
from chrono_forge.models import ErrorLog, Message, Workflow
from chrono_forge.payloads import json_pk
from chrono_forge.primitives.send_to import idempotency_key
from tests import workflows_messages as wm
from tests.waits_support import log, refresh

pytestmark = pytest.mark.django_db


def test_a_sent_message_wakes_the_target_and_is_sent_once_across_replays(chrono_forge_env):
    target = wm.Inbox.perform_later("order-1")
    chrono_forge_env.run_all()  # parked on receive$payment
    sender = wm.Sender.perform_later("s", key="order-1")
    chrono_forge_env.run_all()
    sender, target = refresh(sender), refresh(target)
    assert sender.state == "idle" and sender.parked_on == "receive$ack"  # replays follow
    assert target.state == "completed" and target.context["payment"] == {"amount": 5}
    message = Message.objects.get()
    step = log(sender, "send_to$payment")
    assert step.state == "completed" and step.result == json_pk(message.pk)
    assert step.metadata == {"target": wm.Inbox.job_class(), "key": "order-1", "topic": "payment"}
    assert message.idempotency_key == idempotency_key(sender.pk, "send_to$payment")
    wm.Sender.send("s", "ack", "thanks")  # the sender replays send_to: nothing sent again
    chrono_forge_env.run_all()
    assert refresh(sender).state == "completed"
    assert Message.objects.filter(workflow=target).count() == 1
    assert log(sender, "send_to$payment").attempts == 1


def test_an_unknown_target_is_retried_then_the_workflow_stalls(chrono_forge_env):
    sender = wm.Sender.perform_later("s", key="nobody")
    chrono_forge_env.run_all()
    sender = refresh(sender)
    assert sender.state == "stalled"
    step = log(sender, "send_to$payment")
    unknown = "chrono_forge.exceptions.UnknownWorkflowError"
    assert (step.state, step.attempts, step.error_class) == ("failed", 3, unknown)
    assert ErrorLog.objects.filter(workflow=sender, error_class=unknown).count() == 3
    assert Message.objects.count() == 0


def test_a_target_started_between_attempts_gets_the_message(chrono_forge_env):
    sender = wm.Sender.perform_later("s", key="late")
    chrono_forge_env.run_due()  # the first attempt fails: a retry is scheduled
    assert log(sender, "send_to$payment").attempts == 1
    wm.Inbox.perform_later("late")
    chrono_forge_env.run_all()
    assert refresh(Workflow.objects.get(key="late")).context["payment"] == {"amount": 5}
    assert log(sender, "send_to$payment").state == "completed"


def test_exactly_one_message_whatever_boundary_the_sender_dies_at(db):
    # The target is stalled (it accepts messages and no pass of its own runs); the sender is
    # killed at every boundary, the one between the send's commit and the step's completion
    # included: its retried send repeats the idempotency key, so one message is stored.
    def before_each():
        wm.reset()
        Workflow.objects.filter(key="order-c").delete()
        Workflow.objects.create(job_class=wm.Inbox.job_class(), key="order-c", state="stalled")

    class OneMessage(CrashTest):
        def outcome(self):
            # the step's result is the message's id, new in every run: compared as "that id"
            result = super().outcome()
            ids = set(Message.objects.filter(workflow__key="order-c").values_list("pk", flat=True))
            for run in result.values():
                step = run["steps"].get("send_to$payment")
                if step is not None and step["result"] is not None:
                    step["result"] = "the message's id" if step["result"] in ids else "other"
            return result

        def compare(self, boundary, clean, crashed):
            messages = Message.objects.filter(workflow__key="order-c")
            assert messages.count() == 1, f"killed at {boundary}"
            return super().compare(boundary, clean, crashed)

    report = OneMessage(
        wm.Sender, "crash", {"key": "order-c"}, before_each=before_each
    ).assert_safe()
    described = [b.description for b in report.boundaries]
    assert any("send_to$payment returned" in d for d in described), described


@pytest.mark.parametrize(
    "args, error, match",
    [
        ({"target": dict}, InvalidStepArgument, r"^send_to\$payment: the target must be a Dura"),
        ({"key": ""}, InvalidStepArgument, r"^send_to\$payment: workflow key must not be empty"),
        ({"topic": "a$b"}, InvalidStepArgument, r"^send_to\$a\$b: message topic 'a\$b' must"),
        ({"payload": {1, 2}}, InvalidStepArgument, r"^send_to\$payment: message payload: set"),
        ({"name": "a$b"}, InvalidStepName, r"send_to name 'a\$b' must not contain"),
    ],
)
def test_bad_arguments_stall_before_anything_is_stored(chrono_forge_env, args, error, match):
    wm.FLAGS["send_to"] = args
    with pytest.raises(error, match=match):
        wm.BadSendTo.perform_now("bad")
    wf = Workflow.objects.get(key="bad")
    assert wf.state == "stalled" and wf.execution_logs.count() == 0
    assert Message.objects.count() == 0 and chrono_forge_env.pending == []
