"""receive: FIFO per topic, exactly-once consumption, replays that read nothing, early messages,
parking (and how the admin and the command name it), timeouts, and bad arguments."""

from datetime import timedelta

import pytest

from chrono_forge.exceptions import DuplicateStepName, InvalidStepArgument, InvalidStepName
from chrono_forge.liveness import liveness
from chrono_forge.models import ErrorLog, ExecutionLog, Message, Workflow
from chrono_forge.payloads import json_pk
from tests import workflows_messages as wm
from tests.core_sql import capture, data_statements
from tests.waits_support import log, refresh

pytestmark = pytest.mark.django_db


def test_a_receive_with_nothing_sent_parks_with_nothing_scheduled(chrono_forge_env):
    wf = wm.Inbox.perform_later("o1")
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert (wf.state, wf.next_run_at, wf.parked_on) == ("idle", None, "receive$payment")
    assert wf.parked_since == chrono_forge_env.now
    assert chrono_forge_env.pending == []
    entry = log(wf, "receive$payment")
    assert (entry.state, entry.attempts) == ("pending", 1)
    assert entry.metadata == {"topic": "payment", "name": None}
    reason = liveness(wf)
    assert (reason.kind, reason.text) == ("parked", "parked on message payment since")
    assert Workflow.objects.parked().filter(pk=wf.pk).exists()


def test_a_send_wakes_the_parked_run_which_consumes_the_message_once(chrono_forge_env):
    wf = wm.Inbox.perform_later("o1")
    chrono_forge_env.run_all()
    message = wm.Inbox.send("o1", "payment", {"amount": 5})
    assert refresh(wf).next_run_at == chrono_forge_env.now  # due now, like resume()
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.parked_on is None
    assert wf.context["payment"] == {"amount": 5}
    assert wm.SEEN == [("after", {"amount": 5})]
    entry = log(wf, "receive$payment")
    assert (entry.state, entry.attempts, entry.result) == ("completed", 2, {"amount": 5})
    assert entry.metadata["message_id"] == json_pk(message.pk)
    message.refresh_from_db()
    assert (message.consumed_by_id, message.consumed_at) == (entry.pk, chrono_forge_env.now)
    assert not message.pending


def test_a_message_sent_before_the_receive_ran_is_found_at_once(chrono_forge_env):
    wf = wm.Waiter.perform_later("w")
    chrono_forge_env.run_due()  # waiting an hour: the receive has not run yet
    wm.Waiter.send("w", "late", "early bird")
    chrono_forge_env.run_due()  # the wake-up's early pass finds the wait still running
    assert refresh(wf).state == "idle"
    assert not ExecutionLog.objects.filter(workflow=wf, step_name="receive$late").exists()
    chrono_forge_env.run_all()  # the wait's deadline
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["got"] == "early bird"
    assert log(wf, "receive$late").attempts == 1  # found on its first call: never parked


def test_messages_of_a_topic_are_consumed_oldest_first(chrono_forge_env):
    wf = wm.Loop.perform_later("l", count=3)
    for n in range(4):
        wm.Loop.send("l", "item", n)
        chrono_forge_env.advance(0.001)  # sent one after another, as separate requests are
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["got"] == [0, 1, 2]
    left = Message.objects.pending().get(workflow=wf)
    assert left.payload == 3  # the fourth stays pending
    consumed = Message.objects.consumed().filter(workflow=wf).order_by("created")
    assert [m.consumed_by.step_name for m in consumed] == [
        "receive$item-0",
        "receive$item-1",
        "receive$item-2",
    ]


def test_a_loop_parks_between_messages_and_resumes_in_order(chrono_forge_env):
    wf = wm.Loop.perform_later("l", count=3)
    chrono_forge_env.run_all()
    for n in ("a", "b", "c"):
        assert refresh(wf).parked_on == f"receive$item-{'abc'.index(n)}"
        wm.Loop.send("l", "item", n)
        chrono_forge_env.run_all()
    assert refresh(wf).context["got"] == ["a", "b", "c"]


def test_topics_are_independent(chrono_forge_env):
    wf = wm.TwoTopics.perform_later("t")
    wm.TwoTopics.send("t", "a", "first sent")
    chrono_forge_env.run_all()
    assert refresh(wf).parked_on == "receive$b"  # the "a" message does not satisfy "b"
    wm.TwoTopics.send("t", "b", "second sent")
    chrono_forge_env.run_all()
    assert refresh(wf).context == {"b": "second sent", "a": "first sent"}


def test_a_replayed_receive_returns_the_same_payload_and_reads_no_message(chrono_forge_env):
    wf = wm.Loop.perform_later("l", count=2)
    wm.Loop.send("l", "item", "x")
    chrono_forge_env.run_all()  # consumes "x", parks on item-1
    wm.Loop.send("l", "item", "y")
    with capture() as queries:
        chrono_forge_env.run_all()
    assert refresh(wf).context["got"] == ["x", "y"]
    message_reads = [sql for sql in data_statements(queries) if "chrono_forge_message" in sql]
    # item-0 replays from its log; item-1 reads one message and marks it consumed
    assert len([s for s in message_reads if s.lstrip().upper().startswith("SELECT")]) == 1
    assert len([s for s in message_reads if s.lstrip().upper().startswith("UPDATE")]) == 1


def test_a_null_payload_is_delivered(chrono_forge_env):
    wf = wm.Inbox.perform_later("o1")
    wm.Inbox.send("o1", "payment", None)
    chrono_forge_env.run_all()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["payment"] is None


# -- timeout ---------------------------------------------------------------------------------------
def test_a_timeout_schedules_the_run_and_returns_none_when_nothing_came(chrono_forge_env):
    start = chrono_forge_env.now
    wf = wm.WithTimeout.perform_later("t", seconds=60)
    chrono_forge_env.run_due()
    wf = refresh(wf)
    assert (wf.state, wf.parked_on) == ("idle", None)
    assert wf.next_run_at == start + timedelta(seconds=60)  # scheduled, not parked
    chrono_forge_env.advance(60)
    chrono_forge_env.run_due()
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["answer"] is None
    entry = log(wf, "receive$answer")
    assert entry.state == "completed" and entry.result is None and entry.metadata["timed_out"]
    # a message arriving after the timeout is not consumed by the finished receive
    assert wm.SEEN == [("after", None)]


def test_a_message_before_the_timeout_wins_and_the_timeout_delivery_exits(chrono_forge_env):
    wf = wm.WithTimeout.perform_later("t", seconds=60)
    chrono_forge_env.run_due()
    chrono_forge_env.advance(10)
    wm.WithTimeout.send("t", "answer", "yes")
    chrono_forge_env.run_due()
    chrono_forge_env.advance(60)
    chrono_forge_env.run_due()  # the timeout's continuation is superseded: it exits
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["answer"] == "yes"
    assert wm.SEEN == [("after", "yes")]


def test_the_timeout_is_fixed_at_the_first_call(chrono_forge_env):
    start = chrono_forge_env.now
    wf = wm.WithTimeout.perform_later("t", seconds=60)
    chrono_forge_env.run_due()
    chrono_forge_env.advance(30)
    refresh(wf).resume()  # an early pass re-arms the same deadline, never a later one
    chrono_forge_env.run_due()
    assert refresh(wf).next_run_at == start + timedelta(seconds=60)
    assert log(wf, "receive$answer").attempts == 2


def test_a_zero_timeout_checks_once(chrono_forge_env):
    wf = wm.WithTimeout.perform_now("t", seconds=0)
    assert wf.state == "completed" and wf.context["answer"] is None


# -- bad arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, error, match",
    [
        ({"topic": ""}, InvalidStepArgument, r"^receive: message topic must not be empty"),
        ({"topic": "a$b"}, InvalidStepArgument, r"^receive: message topic 'a\$b' must not"),
        ({"topic": 7}, InvalidStepArgument, r"^receive: message topic must be a str, got int"),
        ({"topic": "x" * 201}, InvalidStepArgument, r"^receive: message topic is 201 char"),
        ({"topic": "t", "name": "a$b"}, InvalidStepName, r"receive name 'a\$b' must not"),
        ({"topic": "t", "name": ""}, InvalidStepName, r"receive name must be a non-empty"),
        ({"topic": "t", "timeout": -1}, InvalidStepArgument, r"^receive\$t: timeout must not be"),
        ({"topic": "t", "timeout": "1h"}, InvalidStepArgument, r"^receive\$t: timeout must be a"),
        ({"topic": "t", "timeout": float("nan")}, InvalidStepArgument, r"^receive\$t: timeout"),
        ({"topic": "t", "timeout": True}, InvalidStepArgument, r"^receive\$t: timeout must be a"),
    ],
)
def test_bad_arguments_stall_before_anything_is_stored(chrono_forge_env, args, error, match):
    wm.FLAGS["args"] = args
    with pytest.raises(error, match=match):
        wm.BadReceive.perform_now("bad")
    wf = Workflow.objects.get(key="bad")
    assert wf.state == "stalled"  # a programming error: not retried
    assert wf.execution_logs.count() == 0
    assert chrono_forge_env.pending == []
    assert ErrorLog.objects.filter(workflow=wf).count() == 1


def test_receiving_one_topic_twice_without_names_is_a_duplicate_step(chrono_forge_env):
    with pytest.raises(DuplicateStepName, match=r"receive\$t is used twice in one pass"):
        wm.SameTopicTwice.perform_now("dup")
    assert Workflow.objects.get(key="dup").state == "stalled"
