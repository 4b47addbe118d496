"""Demo workflows that `manage.py seed_demo` enqueues and the admin then shows.

Each step is an ordinary method. `durably_execute` checkpoints its return value, so when a pass is
replayed (after a retry, a crash or a deploy) finished steps are skipped and return what they
returned the first time.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from chrono_forge import DurableWorkflow, RetryPolicy


class OrderWorkflow(DurableWorkflow):
    """The happy path: charge the customer, then ship the order."""

    retry_policy = RetryPolicy(max_attempts=5, base=1, cap=5)

    def perform(self, *, order_id):
        self.order_id = order_id
        self.context.set_once("order_id", order_id)
        charge = self.durably_execute(self.charge)
        self.context.set_once("charge_id", charge["charge_id"])
        self.durably_execute("ship", name="ship_order")

    def charge(self):
        return {"charge_id": f"ch_{self.order_id}"}

    def ship(self):
        return {"tracking_number": f"TRK{self.order_id:08d}"}


class SignupWorkflow(DurableWorkflow):
    """Three steps, each using what the previous one returned."""

    def perform(self, *, email):
        self.email = email
        account = self.durably_execute(self.create_account)
        self.context.set_once("account_id", account["account_id"])
        self.durably_execute(self.send_welcome_email)
        self.durably_execute(self.book_onboarding_call, name="onboarding_call")

    def create_account(self):
        return {"account_id": f"acct_{self.email.split('@')[0]}"}

    def send_welcome_email(self):
        return {"to": self.email, "template": "welcome"}

    def book_onboarding_call(self):
        return {"slot": "Tuesday 10:00"}


class FlakyPaymentWorkflow(DurableWorkflow):
    """A step that fails once (a gateway timeout) and succeeds when chrono_forge retries it.

    The "already failed once" flag lives in the workflow context, which is saved even when the
    step raises, so the retry (another pass, possibly on another worker) sees it.
    """

    def perform(self, *, invoice_id):
        self.invoice_id = invoice_id
        self.durably_execute(
            self.capture_payment, retry_policy=RetryPolicy(max_attempts=3, base=1, cap=2)
        )
        self.durably_execute(self.send_receipt)

    def capture_payment(self):
        if self.context.set_once("gateway_timed_out_once", True):
            raise ConnectionError("payment gateway timed out (demo: only the first attempt fails)")
        return {"payment_id": f"pay_{self.invoice_id}"}

    def send_receipt(self):
        return {"receipt": f"R-{self.invoice_id}"}


class InventorySyncWorkflow(DurableWorkflow):
    """Always fails: its step exhausts a two-attempt policy, so the workflow ends up *stalled*.

    In the admin, a stalled workflow shows its errors with tracebacks and can be retried once the
    cause is fixed.
    """

    def perform(self, *, warehouse):
        self.warehouse = warehouse
        self.durably_execute(
            self.pull_stock_levels, retry_policy=RetryPolicy(max_attempts=2, base=0, cap=0)
        )

    def pull_stock_levels(self):
        raise RuntimeError(f"warehouse {self.warehouse!r} API answered 503 (demo: always fails)")


class ParcelDeliveryWorkflow(DurableWorkflow):
    """Durable waits and periodic work (see docs/waits.md), with second-long intervals so the demo
    finishes in a few seconds; in production they would be hours or days.

    No worker is held while the workflow waits: each wait ends the pass and schedules the next one
    (``Workflow.next_run_at`` in the admin shows when).
    """

    def perform(self, *, parcel_id):
        self.parcel_id = parcel_id
        # A cooling-off period: a durable sleep whose deadline is fixed the first time it runs.
        self.wait(timedelta(seconds=2), "cooling_off")
        # Poll the carrier every second (by continuation) until it has the parcel; 1 minute max.
        self.wait_until(self.carrier_has_parcel, timeout=timedelta(minutes=1), check_interval=1)
        # A tracking update every second until the parcel is delivered.
        self.durably_repeat(self.send_tracking_update, every=1, till=self.delivered)
        self.durably_execute(self.close_parcel)

    def carrier_has_parcel(self):
        checks = self.context.get("carrier_checks", 0) + 1
        self.context["carrier_checks"] = checks
        return checks >= 2  # the (pretend) carrier API says yes on the second check

    def send_tracking_update(self, scheduled_time):
        # The scheduled time (not "now") identifies the tick, even when it runs late.
        updates = self.context.get("tracking_updates", [])
        self.context["tracking_updates"] = [*updates, scheduled_time.isoformat()]

    def delivered(self):
        return len(self.context.get("tracking_updates", [])) >= 3

    def close_parcel(self):
        return {"parcel_id": self.parcel_id, "tracking_updates": 3}


@dataclass(frozen=True)
class Demo:
    workflow_class: type
    key: str
    kwargs: dict = field(default_factory=dict)
    expected_state: str = "completed"


DEMOS = [
    Demo(OrderWorkflow, "order-1001", {"order_id": 1001}),
    Demo(OrderWorkflow, "order-1002", {"order_id": 1002}),
    Demo(SignupWorkflow, "signup-ada", {"email": "ada@example.com"}),
    Demo(FlakyPaymentWorkflow, "invoice-2001", {"invoice_id": 2001}),
    Demo(InventorySyncWorkflow, "inventory-north", {"warehouse": "north"}, "stalled"),
    Demo(ParcelDeliveryWorkflow, "parcel-3001", {"parcel_id": 3001}),
]
