"""A small, realistic fleet for the browser test and the README's screenshots (Admin section)."""

from __future__ import annotations

from datetime import timedelta

from chrono_forge import clock
from tests.admin_fixtures import make_error, make_log, make_workflow

SHOP = "shop.workflows.OrderFulfillment"
REPORT = "reports.workflows.NightlyReport"
SYNC = "inventory.workflows.SupplierSync"
ONBOARD = "accounts.workflows.CustomerOnboarding"


def build_demo() -> dict:
    now = clock.now()
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    demo = {}
    # completed history
    for i in range(14):
        wf = make_workflow(
            "completed",
            job_class=SHOP,
            key=f"order-{1000 + i}",
            ago=timedelta(minutes=40 + i),
            completed_at=ago(minutes=38 + i),
        )
        make_log(wf, "durably_execute$reserve_stock", started=ago(minutes=40 + i))
    for i in range(5):
        make_workflow(
            "completed",
            job_class=REPORT,
            key=f"2026-11-{20 + i}",
            ago=timedelta(days=8 - i),
            completed_at=ago(days=8 - i) + timedelta(minutes=12),
        )
    for i in range(3):
        make_workflow(
            "completed",
            job_class=ONBOARD,
            key=f"cust-{77 + i}",
            ago=timedelta(hours=3 + i),
            completed_at=ago(hours=2 + i),
        )

    # an idle workflow waiting on an event for a long time, and one polling
    event = make_workflow(
        "idle",
        job_class=ONBOARD,
        key="cust-4211",
        ago=timedelta(hours=5),
        parked_on="continue_if$email_verified",
        parked_since=ago(hours=4, minutes=58),
    )
    make_log(
        event, "durably_execute$create_account", started=ago(hours=5), result={"account_id": 4211}
    )
    make_log(
        event, "durably_execute$send_welcome_email", started=ago(hours=5) + timedelta(seconds=3)
    )
    make_log(
        event,
        "continue_if$email_verified",
        "pending",
        started=ago(hours=4, minutes=58),
        attempts=3,
        metadata={"condition": "email_verified", "name": "email_verified"},
    )
    event2 = make_workflow(
        "idle",
        job_class=ONBOARD,
        key="cust-4302",
        ago=timedelta(minutes=20),
        parked_on="continue_if$email_verified",
        parked_since=ago(minutes=18),
    )
    make_log(
        event2,
        "continue_if$email_verified",
        "pending",
        started=ago(minutes=18),
        attempts=1,
        metadata={"condition": "email_verified", "name": "email_verified"},
    )
    poll = make_workflow(
        "idle",
        job_class=SHOP,
        key="order-1044",
        ago=timedelta(minutes=50),
        next_run_at=now + timedelta(minutes=7),
    )
    make_log(poll, "durably_execute$reserve_stock", started=ago(minutes=50), result={"reserved": 3})
    make_log(
        poll,
        "wait_until$carrier_picked_up",
        "pending",
        started=ago(minutes=45),
        attempts=4,
        metadata={
            "condition": "carrier_picked_up",
            "timeout_at": (now + timedelta(hours=23)).isoformat(),
            "check_interval": 600,
        },
    )
    scheduled = make_workflow(
        "idle",
        job_class=SHOP,
        key="order-1045",
        ago=timedelta(minutes=3),
        next_run_at=now + timedelta(minutes=27),
    )
    make_log(
        scheduled,
        "wait$cooling_off",
        "pending",
        started=ago(minutes=3),
        metadata={"wait_until": (now + timedelta(minutes=27)).isoformat()},
    )

    # one whose continuation was lost: overdue, resume-overdue sends it again
    lost = make_workflow(
        "idle",
        job_class=SHOP,
        key="order-1046",
        ago=timedelta(minutes=35),
        next_run_at=ago(minutes=25),
    )
    make_log(lost, "durably_execute$reserve_stock", started=ago(minutes=35), result={"reserved": 1})

    # a running one and two stranded ones
    make_workflow(
        "running",
        job_class=SYNC,
        key="supplier-acme",
        ago=timedelta(seconds=40),
        locked_by="q-worker-3f2a",
        locked_at=ago(seconds=40),
    )
    make_workflow(
        "running",
        job_class=SYNC,
        key="supplier-globex",
        ago=timedelta(hours=2),
        locked_by="q-worker-9c1d",
        locked_at=ago(hours=1, minutes=50),
    )
    make_workflow(
        "running",
        job_class=SHOP,
        key="order-0999",
        ago=timedelta(hours=6),
        locked_by="q-worker-77ab",
        locked_at=ago(hours=5, minutes=40),
    )

    # a failed one (workflow-level) with its failure marker
    failed = make_workflow("failed", job_class=REPORT, key="2026-11-27", ago=timedelta(hours=9))
    make_log(failed, "durably_execute$collect_sales", started=ago(hours=9), result={"rows": 18234})
    error = make_error(
        failed,
        None,
        attempt=9,
        error_class="ConnectionError",
        message="could not connect to warehouse-replica:5432 (timeout after 30s)",
    )
    make_log(
        failed,
        f"$workflow_failure${error.pk}",
        started=ago(hours=8),
        metadata={"error_log_id": error.pk},
    )

    # a periodic task with repetitions and a catch-up row
    ticker = make_workflow(
        "idle",
        job_class=SYNC,
        key="price-feed",
        ago=timedelta(hours=3),
        next_run_at=now + timedelta(minutes=1),
    )
    start = ago(hours=3)
    coord = make_log(
        ticker,
        "durably_repeat$poll_prices",
        "pending",
        started=start,
        attempts=0,
        metadata={
            "method": "poll_prices",
            "every": 300,
            "till": "market_closed",
            "start_at": start.isoformat(),
            "last_execution_at": (now - timedelta(minutes=4)).isoformat(),
            "next_execution_at": (now + timedelta(minutes=1)).isoformat(),
            "timeout": 3600,
            "on_error": "continue",
        },
    )
    for n in range(30):
        at = start + timedelta(minutes=5 * n)
        if 10 <= n < 16:  # missed while the workflow was down...
            continue
        if n == 16:  # ...and recorded as one catch-up row when it came back
            make_log(
                ticker,
                f"durably_repeat$poll_prices${int(at.timestamp())}",
                "failed",
                error_class="TimeoutError",
                started=at,
                metadata={
                    "scheduled_for": at.isoformat(),
                    "parent_id": coord.pk,
                    "fast_forwarded": 6,
                    "skipped_from": (at - timedelta(minutes=30)).isoformat(),
                    "skipped_to": (at - timedelta(minutes=5)).isoformat(),
                },
            )
            continue
        make_log(
            ticker,
            f"durably_repeat$poll_prices${int(at.timestamp())}",
            started=at + timedelta(seconds=(n * 7) % 95),
            took=timedelta(seconds=1 + n % 4),
            metadata={
                "scheduled_for": at.isoformat(),
                "timeout_at": (at + timedelta(hours=1)).isoformat(),
                "parent_id": coord.pk,
            },
        )

    # a fan-out with children, one blocked
    fan = make_workflow(
        "idle",
        job_class=REPORT,
        key="2026-11-28",
        ago=timedelta(minutes=30),
        next_run_at=now + timedelta(seconds=10),  # its merge poll
    )
    make_log(fan, "durably_execute$list_stores", started=ago(minutes=30), result={"stores": 480})
    branch = make_log(
        fan,
        "branch$per_store",
        "completed",
        started=ago(minutes=29),
        metadata={
            "automerge": False,
            "sealed": True,
            "cursors": {"stores": {"index": 480}},
            "poll_token": "x",
            "poll": {
                "pending": 132,
                "spawned": 480,
                "never_started": 2,
                "sealed": True,
                "last_polled_at": ago(seconds=20).isoformat(),
                "next_poll_at": (now + timedelta(seconds=10)).isoformat(),
                "polls": 57,
                "rekicked": 0,
                "rekick_total": 2,
                "last_rekick_at": ago(minutes=12).isoformat(),
                "rate": 0.41,
                "eta_seconds": 322,
            },
        },
    )
    make_log(
        fan,
        "merge$per_store",
        "pending",
        started=ago(minutes=20),
        attempts=57,
        metadata={
            "branches": ["per_store"],
            "min_interval": 5,
            "max_interval": 300,
            "poll_token": "x",
        },
    )
    for i in range(8):
        state = (
            "completed",
            "completed",
            "running",
            "idle",
            "stalled",
            "completed",
            "idle",
            "completed",
        )[i]
        child = make_workflow(
            state,
            job_class="reports.workflows.StoreReport",
            key=f"2026-11-28/store-{i + 1:03d}",
            ago=timedelta(minutes=25 - i),
            parent_execution_log=branch,
        )
        if state == "stalled":
            make_error(
                child,
                "durably_execute$render_pdf",
                attempt=3,
                error_class="ValueError",
                message="template 'store_report.html' has no block 'totals'",
            )
    demo.update(event=event, poll=poll, failed=failed, ticker=ticker, fan=fan, branch=branch)
    return demo
