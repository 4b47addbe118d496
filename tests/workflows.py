"""Workflow classes shared by the tests (module level, so their job_class imports)."""

from __future__ import annotations

from chrono_forge import DurableWorkflow, RetryPolicy

CALLS: dict[str, int] = {}


def called(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


class TransientError(Exception):
    pass


class Simple(DurableWorkflow):
    def perform(self, *, value=1):
        first = self.durably_execute(self.first)
        self.context["first"] = first
        self.durably_execute("second", name="second_step")

    def first(self):
        called("Simple.first")
        return {"value": 42}

    def second(self):
        called("Simple.second")


class FlakyOnce(DurableWorkflow):
    def perform(self):
        self.durably_execute(self.flaky)

    def flaky(self):
        if called("FlakyOnce.flaky") == 1:
            raise TransientError("first call fails")
        return "ok"


class AlwaysFails(DurableWorkflow):
    def perform(self):
        self.durably_execute(self.always_fails)

    def always_fails(self):
        called("AlwaysFails")
        raise TransientError("nope")


class PermanentFailure(DurableWorkflow):
    def perform(self):
        called("PermanentFailure")
        raise RuntimeError("Permanent Failure")


class NoSteps(DurableWorkflow):
    def perform(self):
        pass
