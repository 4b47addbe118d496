"""Exactly-once consumption across crashes: the crash-safety helper kills a run at every step
boundary (the one between the receive's step write and its commit included: the consumption
rolls back with it) and checks it recovers like the uninterrupted run, messages included."""

from __future__ import annotations

import pytest

from chrono_forge.crash_safety import CrashTest
from chrono_forge.models import ExecutionLog, Message
from tests import workflows_messages as wm

pytestmark = pytest.mark.django_db


class MessageCrashTest(CrashTest):
    """The helper's outcome, plus every message of the family: topic, payload and the step that
    consumed it (a message consumed twice, or by no step, differs from the clean run)."""

    def outcome(self):
        result = super().outcome()
        for row in self.family():
            messages = Message.objects.filter(workflow=row).order_by("pk")
            result[(row.job_class, row.key)]["messages"] = [
                (m.topic, m.payload, m.consumed_by.step_name if m.consumed_by else None)
                for m in messages
            ]
        return result

    def compare(self, boundary, clean, crashed):
        for identity, expected in clean.items():
            assert crashed[identity]["messages"] == expected["messages"], f"killed at {boundary}"
        return super().compare(boundary, clean, crashed)


def test_a_receive_consumes_exactly_once_whatever_boundary_the_worker_dies_at(db):
    report = MessageCrashTest(wm.SelfSender, "crash", before_each=wm.reset).assert_safe()
    clean = report.clean[(wm.SelfSender.job_class(), "crash")]
    assert clean["state"] == "completed"
    assert clean["messages"] == [("note", {"n": 1}, "receive$note")]
    assert clean["steps"]["receive$note"]["result"] == {"n": 1}
    described = [b.description for b in report.boundaries]
    assert any("receive$note inserted (completed)" in d for d in described), described


def test_a_kill_between_the_step_write_and_the_commit_leaves_the_message_pending(db):
    seen = {}

    class Snapshot(MessageCrashTest):
        def recover(self, env):
            # the moment the worker died, before production's recovery runs
            seen["messages"] = list(Message.objects.values_list("consumed_at", flat=True))
            seen["step"] = (
                ExecutionLog.objects.filter(step_name="receive$note")
                .values_list("state", flat=True)
                .first()
            )
            super().recover(env)

    test = Snapshot(wm.SelfSender, "crash", before_each=wm.reset)
    killer, _ = test.run(kill_at=None)
    clean = test.outcome()
    (boundary,) = [b for b in killer.seen if "receive$note inserted (completed)" in b.description]
    _, died = test.run(kill_at=boundary.number)
    assert died is not None
    # the step's INSERT and the consumption rolled back together: no step, the message pending
    assert seen == {"messages": [None], "step": None}
    # The recovered run consumed it once, like the clean run. The post step runs once more (its
    # completion rode in the rolled-back transaction): its send repeats the idempotency key, so
    # no second message is stored.
    assert test.compare(boundary, clean, test.outcome()) == 1
    assert Message.objects.count() == 1
    assert wm.SEEN == [("after", {"n": 1})]
