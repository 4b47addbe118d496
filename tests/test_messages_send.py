"""send: what is stored, the wake-up (like resume(), none lost while a pass runs), the caller's
transaction, idempotency keys, refused targets and bad input (nothing read or stored)."""

from unittest import mock

import pytest
from django.core import checks
from django.db import transaction

from chrono_forge.exceptions import UnknownWorkflowError, WorkflowFinishedError
from chrono_forge.executor import Pass
from chrono_forge.models import Message, Workflow
from tests import workflows_messages as wm
from tests.core_sql import capture
from tests.waits_support import refresh

pytestmark = pytest.mark.django_db


def parked(env, key="o1") -> Workflow:
    wf = wm.Inbox.perform_later(key)
    env.run_all()
    assert refresh(wf).parked_on == "receive$payment"
    return wf


def test_send_stores_the_message_and_makes_the_parked_run_due(chrono_forge_env):
    wf = parked(chrono_forge_env)
    message = wm.Inbox.send("o1", "payment", {"amount": 5}, idempotency_key="evt_1")
    stored = Message.objects.get()
    assert (stored.pk, stored.workflow_id, stored.topic) == (message.pk, wf.pk, "payment")
    assert (stored.payload, stored.idempotency_key) == ({"amount": 5}, "evt_1")
    assert stored.created == chrono_forge_env.now and stored.pending
    wf = refresh(wf)
    assert (wf.next_run_at, wf.parked_on) == (chrono_forge_env.now, "receive$payment")
    assert [run.kwargs.get("token") for run in chrono_forge_env.pending] == [None]


def test_workflow_send_is_the_same_send(chrono_forge_env):
    wf = parked(chrono_forge_env)
    refresh(wf).send("payment", [1, 2])
    chrono_forge_env.run_all()
    assert refresh(wf).context["payment"] == [1, 2]


def test_a_repeated_idempotency_key_returns_the_first_message_and_stores_nothing(
    chrono_forge_env,
):
    parked(chrono_forge_env)
    first = wm.Inbox.send("o1", "payment", {"amount": 5}, idempotency_key="evt_1")
    chrono_forge_env.run_all()
    again = wm.Inbox.send("o1", "payment", {"amount": 999}, idempotency_key="evt_1")
    assert again.pk == first.pk and again.payload == {"amount": 5}
    assert Message.objects.count() == 1
    assert chrono_forge_env.pending == []  # nothing woken either


def test_idempotency_keys_are_per_workflow(chrono_forge_env):
    parked(chrono_forge_env, "o1")
    parked(chrono_forge_env, "o2")
    wm.Inbox.send("o1", "payment", 1, idempotency_key="evt")
    wm.Inbox.send("o2", "payment", 2, idempotency_key="evt")
    assert Message.objects.count() == 2


def test_a_send_inside_a_rolled_back_transaction_stores_and_wakes_nothing(chrono_forge_env):
    wf = parked(chrono_forge_env)
    with pytest.raises(RuntimeError), transaction.atomic():
        wm.Inbox.send("o1", "payment", 1)
        raise RuntimeError("the caller's own write failed")
    assert Message.objects.count() == 0
    assert refresh(wf).next_run_at is None
    assert chrono_forge_env.pending == []


def test_a_send_inside_a_committed_transaction_delivers_on_commit(chrono_forge_env):
    wf = parked(chrono_forge_env)
    with transaction.atomic():
        wm.Inbox.send("o1", "payment", 1)
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"


def test_a_send_landing_while_the_receive_parks_is_not_lost(chrono_forge_env):
    # The message commits after the receive found nothing and before the pass releases: the
    # running row's wake_requested makes the release publish an immediate continuation.
    wf = wm.Inbox.perform_later("o1")
    original = Pass.park

    def park_then_a_send_arrives(run, step):
        halt = original(run, step)
        assert Workflow.objects.get(pk=run.row.pk).state == "running"
        wm.Inbox.send("o1", "payment", "raced")
        return halt

    with mock.patch.object(Pass, "park", park_then_a_send_arrives):
        chrono_forge_env.run_due()  # the first pass parks; the send is in
    wf = refresh(wf)
    assert wf.state == "completed" and wf.context["payment"] == "raced"


def test_a_stalled_run_keeps_the_message_for_its_retry(chrono_forge_env):
    wf = parked(chrono_forge_env)
    Workflow.objects.filter(pk=wf.pk).update(state="stalled")
    wm.Inbox.send("o1", "payment", 7)
    assert chrono_forge_env.pending == []  # a stalled run is not woken by a message
    assert Message.objects.pending().count() == 1
    wm.Inbox.retry_now("o1")
    assert refresh(wf).context["payment"] == 7


def test_an_unknown_key_is_refused(chrono_forge_env):
    with pytest.raises(UnknownWorkflowError, match=r"Inbox\(nope\) does not exist"):
        wm.Inbox.send("nope", "payment", 1)
    parked(chrono_forge_env)
    with pytest.raises(UnknownWorkflowError):  # the key exists, but for another class
        wm.Loop.send("o1", "item", 1)
    assert Message.objects.count() == 0


def test_a_completed_run_is_refused(chrono_forge_env):
    wf = parked(chrono_forge_env)
    wm.Inbox.send("o1", "payment", 1)
    chrono_forge_env.run_all()
    assert refresh(wf).state == "completed"
    with pytest.raises(WorkflowFinishedError, match=r"Inbox\(o1\) is completed"):
        wm.Inbox.send("o1", "payment", 2)
    assert Message.objects.count() == 1 and chrono_forge_env.pending == []


# -- bad input: a clear error, nothing read or stored --------------------------------------------
@pytest.mark.parametrize(
    "args, error, match",
    [
        (("o1", "", 1), ValueError, "message topic must not be empty"),
        (("o1", "a$b", 1), ValueError, r"message topic 'a\$b' must not contain '\$'"),
        (("o1", None, 1), TypeError, "message topic must be a str, got NoneType"),
        (("o1", "t" * 201, 1), ValueError, "message topic is 201 characters; the limit is 200"),
        (("o1", "t", {1, 2}), TypeError, "message payload: set"),
        (("o1", "t", (1, 2)), TypeError, r"message payload: tuples are refused"),
        (("o1", "t", {"x": float("nan")}), ValueError, r"message payload\['x'\]: nan"),
        (("o1", "t", {1: "a"}), TypeError, "the dict key 1 is a int"),
        (("o1", "t", "\x00"), ValueError, "NUL"),
        (("", "t", 1), ValueError, "workflow key must not be empty"),
        ((None, "t", 1), TypeError, "workflow key must be a str"),
    ],
)
def test_bad_arguments_are_refused_before_any_query(chrono_forge_env, args, error, match):
    with capture() as queries, pytest.raises(error, match=match):
        wm.Inbox.send(*args)
    assert queries.captured_queries == []


@pytest.mark.parametrize(
    "key, error, match",
    [
        (7, TypeError, "idempotency_key must be a str or None, got int"),
        ("", ValueError, "idempotency_key must not be empty"),
        ("k" * 256, ValueError, "idempotency_key is 256 characters; the limit is 255"),
        (b"evt", TypeError, "idempotency_key must be a str or None, got bytes"),
    ],
)
def test_a_bad_idempotency_key_is_refused_before_any_query(chrono_forge_env, key, error, match):
    with capture() as queries, pytest.raises(error, match=match):
        wm.Inbox.send("o1", "payment", 1, idempotency_key=key)
    assert queries.captured_queries == []


def test_an_oversized_payload_is_refused_with_the_setting_named(chrono_forge_env, settings):
    settings.CHRONO_FORGE = {**settings.CHRONO_FORGE, "MESSAGE_MAX_BYTES": 100}
    parked(chrono_forge_env)
    with pytest.raises(
        ValueError, match=r"larger than the limit of 100 bytes \(MESSAGE_MAX_BYTES\)"
    ):
        wm.Inbox.send("o1", "payment", "x" * 200)
    wm.Inbox.send("o1", "payment", "x" * 50)  # within the limit
    assert Message.objects.count() == 1


@pytest.mark.parametrize("value", [0, -1, "64k", 1.5, True])
def test_a_bad_message_max_bytes_setting_is_a_system_check_error(settings, value):
    settings.CHRONO_FORGE = {"MESSAGE_MAX_BYTES": value}
    errors = [m for m in checks.run_checks(databases=[]) if m.id == "chrono_forge.E004"]
    assert [e.msg for e in errors] == [
        f"CHRONO_FORGE['MESSAGE_MAX_BYTES'] must be a positive number of bytes (int), "
        f"got {value!r}."
    ]
