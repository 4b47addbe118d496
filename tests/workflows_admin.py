"""Workflow classes used by the admin tests (module level, so their job_class imports)."""

from __future__ import annotations

from chrono_forge import DurableWorkflow, RetryPolicy

CALLS: dict[str, int] = {}


class ChargeDeclined(Exception):
    pass


class FlakyCharge(DurableWorkflow):
    """Stalls on its second step until ``CALLS["fixed"]`` is set, then completes on retry."""

    retry_policy = RetryPolicy(max_attempts=2, base=1, jitter=False)

    def perform(self, *, order_id: int = 1, amount: int = 10):
        self.context.set_once(
            "cart",
            {
                "order_id": order_id,
                "lines": [{"sku": "TEA-01", "qty": 2}, {"sku": "MUG-07", "qty": 1}],
            },
        )
        self.context.set_once("customer", "cus_8842")
        self.durably_execute(self.reserve)
        self.durably_execute(self.charge)
        self.context["charged"] = amount

    def reserve(self):
        return {"reserved": True}

    def charge(self):
        CALLS["charge"] = CALLS.get("charge", 0) + 1
        if not CALLS.get("fixed"):
            raise ChargeDeclined("card declined by the issuer (code 51)")
        return "ch_123"


class Quick(DurableWorkflow):
    def perform(self, **kwargs):
        self.durably_execute(self.step)

    def step(self):
        return 1
