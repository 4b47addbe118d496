"""Workflow classes used by the admin tests (module level, so their job_class imports)."""

from __future__ import annotations

from datetime import timedelta

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import per_test

#: body counters and switches (``CALLS["fixed"]``), empty at the start of every test
CALLS: dict[str, int] = per_test({})


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


class Onboarding(DurableWorkflow):
    """Every wait primitive in a row, for the admin's contract test."""

    def perform(self, *, customer_id: int = 1):
        self.durably_execute(self.create_account)
        self.wait(timedelta(minutes=5), "cooling_off")
        self.continue_if("email_verified")
        self.wait_until(
            "carrier_picked_up", timeout=timedelta(hours=1), check_interval=timedelta(minutes=10)
        )

    def create_account(self):
        return {"account": 42}

    def email_verified(self):
        return bool(CALLS.get("verified"))

    def carrier_picked_up(self):
        return bool(CALLS.get("picked"))


class PriceFeed(DurableWorkflow):
    def perform(self):
        self.durably_repeat("poll_prices", every=timedelta(minutes=1), till="market_closed")

    def poll_prices(self):
        CALLS["ticks"] = CALLS.get("ticks", 0) + 1

    def market_closed(self):
        return CALLS.get("ticks", 0) >= 3


class StoreReport(DurableWorkflow):
    """A branch child; store 2 fails for good (workflow retry budget 1)."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self, *, store: int = 0):
        if store == 2 and not CALLS.get("store_fixed"):
            raise RuntimeError("store 2: template has no block 'totals'")
        self.durably_execute(self.render)

    def render(self):
        return "ok"


class NightlyFanOut(DurableWorkflow):
    def perform(self):
        self.branch("stores", self.dispatch_stores)
        self.merge_branches("stores", min_interval=1, max_interval=5)

    def dispatch_stores(self):
        for store in range(4):
            self.spawn(f"store-{store}", StoreReport, store=store)


class ManualApproval(DurableWorkflow):
    """Parks on an event whose step name differs from its condition method."""

    def perform(self):
        self.continue_if(self.is_approved, name="manual_approval")

    def is_approved(self):
        return bool(CALLS.get("approved"))
