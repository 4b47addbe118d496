"""Workflows of the messages tests (send / receive)."""

from __future__ import annotations

from datetime import timedelta

from chrono_forge import DurableWorkflow
from tests.factories import per_test

#: what each workflow's steps saw, by test
SEEN: list = per_test([])
FLAGS: dict = per_test({})


def reset() -> None:
    """Between the runs of one crash test (each test starts with both empty anyway)."""
    SEEN.clear()
    FLAGS.clear()


class Inbox(DurableWorkflow):
    """Receives one payment, then records it."""

    def perform(self):
        payment = self.receive("payment")
        self.context["payment"] = payment
        self.durably_execute(self.after)

    def after(self):
        SEEN.append(("after", self.context["payment"]))


class Loop(DurableWorkflow):
    """Receives ``count`` messages of one topic, in order."""

    def perform(self, *, count=3):
        got = [self.receive("item", name=f"item-{i}") for i in range(count)]
        self.context["got"] = got


class TwoTopics(DurableWorkflow):
    def perform(self):
        self.context["b"] = self.receive("b")
        self.context["a"] = self.receive("a")


class WithTimeout(DurableWorkflow):
    def perform(self, *, seconds=60):
        self.context["answer"] = self.receive("answer", timeout=seconds)
        self.durably_execute(self.after)

    def after(self):
        SEEN.append(("after", self.context["answer"]))


class SameTopicTwice(DurableWorkflow):
    """Two receives of one topic without names: the second is a duplicate step."""

    def perform(self):
        self.receive("t", timeout=0)
        self.receive("t", timeout=0)


class BadReceive(DurableWorkflow):
    """Calls receive with FLAGS["args"] (bad-input tests)."""

    def perform(self):
        self.receive(**FLAGS["args"])


class SelfSender(DurableWorkflow):
    """A step sends itself a message (idempotently), then the run receives it: the crash-safety
    helper kills it at every boundary, the consumption's included."""

    def perform(self):
        self.durably_execute(self.post)
        self.context["got"] = self.receive("note")
        self.durably_execute(self.after)

    def post(self):
        type(self).send(self.key, "note", {"n": 1}, idempotency_key="post-1")

    def after(self):
        SEEN.append(("after", self.context["got"]))


class Waiter(DurableWorkflow):
    """Waits, so a test can send while the run is scheduled."""

    def perform(self):
        self.wait(timedelta(hours=1), "nap")
        self.context["got"] = self.receive("late")


class Sender(DurableWorkflow):
    """Sends a payment to the Inbox run ``key``, then waits for an acknowledgement."""

    def perform(self, *, key):
        self.send_to(Inbox, key, "payment", {"amount": 5})
        self.context["ack"] = self.receive("ack")


class BadSendTo(DurableWorkflow):
    """Calls send_to with FLAGS["send_to"] over good defaults (bad-input tests)."""

    def perform(self):
        args = {"target": Inbox, "key": "k", "topic": "payment", "payload": 1}
        args.update(FLAGS["send_to"])
        self.send_to(
            args.pop("target"), args.pop("key"), args.pop("topic"), args.pop("payload"), **args
        )
