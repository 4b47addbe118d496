"""Workflow classes for the versioning tests (``patched``, ``deprecate_patch``, replay divergence).

A deploy is simulated the way it happens in production: the class keeps its dotted path and its
``perform()`` behaves differently from one moment on. Which changes are "deployed" is the set
``DEPLOYED``, which a test changes between passes; ``CALLS`` counts step bodies and ``OPEN`` holds
the event gates that are open. All three are empty at the start of every test
(``tests.factories``).
"""

from __future__ import annotations

from chrono_forge import DurableWorkflow
from tests.factories import per_test

DEPLOYED: set[str] = per_test(set())
CALLS: dict[str, int] = per_test({})
OPEN: set[str] = per_test(set())


def deployed(change: str) -> bool:
    return change in DEPLOYED


class Steps(DurableWorkflow):
    """Shared step bodies and gates (abstract: never started itself)."""

    _current = ""

    def run(self, name: str):
        """The step ``durably_execute$<name>``; its body counts its calls in CALLS."""
        self._current = name  # read by the body, which the call runs synchronously
        return self.durably_execute(self.body, name=name)

    def body(self):
        CALLS[self._current] = CALLS.get(self._current, 0) + 1
        return self._current

    def gate(self, name: str) -> None:
        """The event gate ``continue_if$<name>``, open once a test adds ``<key>:<name>`` to OPEN."""
        self._current = name
        self.continue_if(self.is_open, name=name)

    def is_open(self) -> bool:
        return f"{self.key}:{self._current}" in OPEN

    def perform(self, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError


class AuditedOrder(Steps):
    """charge, gate "approved", [add-audit: audit], gate "packed", ship.

    A run parked at "approved" when add-audit is deployed reaches the patch for the first time
    under the new code (True); a run parked at "packed" went past it under the old code (False).
    """

    def perform(self):
        self.run("charge")
        self.gate("approved")
        if deployed("add-audit") and self.patched("add-audit"):
            self.run("audit")
        self.gate("packed")
        self.run("ship")


class NestedPatches(Steps):
    """v2 added a step, v3 (deployed later) added another inside v2's branch."""

    def perform(self):
        self.run("start")
        self.gate("first")
        if deployed("v2") and self.patched("v2"):
            self.run("v2_step")
            if deployed("v3") and self.patched("v3"):
                self.run("v3_step")
        self.gate("second")
        self.run("end")


class PatchInLoop(Steps):
    """Three items, each processed behind its gate; audit-each adds an audit per item, each
    iteration with its own change id."""

    def perform(self):
        for i in range(3):
            if deployed("audit-each") and self.patched(f"audit-{i}"):
                self.run(f"audit_{i}")
            self.run(f"process_{i}")
            self.gate(f"gate_{i}")


class PatchThenWait(Steps):
    """A run that ends on its own: charge, [patched: audit], a 60 s wait, ship."""

    def perform(self, *, patch: bool = True):
        self.run("charge")
        if patch and self.patched("add-audit"):
            self.run("audit")
        self.wait(60, "cool_down")
        self.run("ship")


#: Change ids a workflow argument could not carry (not JSON, or refused by the kwargs checks).
BAD_IDS = {
    "empty": "",
    "dollar": "a$b",
    "int": 7,
    "none": None,
    "nul": "nul\x00",
    "surrogate": "bad\udc80",
    "long": "x" * 300,
}


class BadPatch(Steps):
    """Calls patched/deprecate_patch with the bad id named ``bad`` (BAD_IDS), after one step."""

    def perform(self, *, bad="empty", twice: bool = False, deprecate: bool = False):
        self.run("before")
        change_id = BAD_IDS[bad]
        if twice:
            self.patched("same")
            self.patched("same")
        elif deprecate:
            self.deprecate_patch(change_id)
        else:
            self.patched(change_id)
        self.run("after")


class Deprecated(Steps):
    """add-audit's old path removed: the call that marked it stays as deprecate_patch."""

    def perform(self):
        self.run("charge")
        self.gate("approved")
        if deployed("deprecated"):
            self.deprecate_patch("add-audit")
            self.run("audit")
        elif self.patched("add-audit"):
            self.run("audit")
        self.gate("packed")
        self.run("ship")


class Changing(Steps):
    """a, b, gate "g", c; the change "insert-x" inserts x between a and b without patched()."""

    def perform(self):
        self.run("a")
        if deployed("insert-x"):
            self.run("x")
        self.run("b")
        self.gate("g")
        self.run("c")
