"""Concurrent senders: 20 threads send to one run while a worker thread runs its passes. Every
message is consumed exactly once, each sender's messages in the order it sent them, and all of
them in the order of their ids, which is the order the sends locked the run and committed.

PostgreSQL only (a real row lock to queue on; tests/conftest.py deselects it on SQLite)."""

from __future__ import annotations

import threading

import pytest

from chrono_forge import tasks
from chrono_forge.models import Message, Workflow
from tests import workflows_messages as wm

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]

SENDERS = 20
EACH = 5


def close_connection():
    from django.db import connection

    connection.close()


def test_twenty_concurrent_senders_every_message_consumed_once_in_commit_order(
    chrono_forge_env,
):
    wf = wm.Loop.perform_later("inbox", count=SENDERS * EACH)
    chrono_forge_env.run_all()  # parked on item-0
    barrier = threading.Barrier(SENDERS + 1)
    errors: list[BaseException] = []
    done = threading.Event()

    def sender(n: int) -> None:
        try:
            barrier.wait()
            for seq in range(EACH):
                wm.Loop.send("inbox", "item", {"sender": n, "seq": seq})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            close_connection()

    def worker() -> None:  # a worker running passes meanwhile (a parked pass, a wake, ...)
        try:
            barrier.wait()
            while not done.is_set():
                tasks.run_workflow(wm.Loop.job_class(), "inbox")
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            close_connection()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    consumer = threading.Thread(target=worker)
    for thread in [*threads, consumer]:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    consumer.join(timeout=120)
    assert not any(t.is_alive() for t in [*threads, consumer])
    assert errors == []
    chrono_forge_env.run_all()  # whatever the wake-ups left queued

    wf.refresh_from_db()
    assert wf.state == "completed"
    got = wf.context["got"]
    assert len(got) == SENDERS * EACH
    assert sorted((m["sender"], m["seq"]) for m in got) == [
        (n, seq) for n in range(SENDERS) for seq in range(EACH)
    ]  # each message once
    for n in range(SENDERS):
        assert [m["seq"] for m in got if m["sender"] == n] == list(range(EACH))
    by_id = list(
        Message.objects.filter(workflow=wf).order_by("pk").values_list("payload", flat=True)
    )
    assert got == by_id  # consumed in id order: the order the sends committed
    assert Message.objects.pending().count() == 0
    consumers = Message.objects.values_list("consumed_by__step_name", flat=True)
    assert len(set(consumers)) == SENDERS * EACH
    assert Workflow.objects.count() == 1
