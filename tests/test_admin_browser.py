"""The admin in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser).

Logs in, opens the changelist and a stalled workflow's timeline, runs the retry action, and takes
the screenshots shown in the README (Admin section). They go to a temporary directory, or to
docs/screenshots/ with ``CHRONO_FORGE_UPDATE_SCREENSHOTS=1 scripts/test -k browser`` (a test run
leaves git clean).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connections

from chrono_forge.models import Workflow
from tests import workflows_admin as wa
from tests.admin_demo import build_demo

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser_page(monkeypatch):
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: apt-get install -y chromium (scripts/test installs it)"
        )
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes between
    # browser steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1440, "height": 900}, color_scheme="light"
            )
            yield context.new_page()
        finally:
            browser.close()
            # Code inside sync_playwright() runs in a greenlet with its own context, hence its own
            # database connections: close them here, or the test database cannot be dropped.
            connections.close_all()


@pytest.fixture
def shot(tmp_path):
    folder = SCREENSHOTS if os.environ.get("CHRONO_FORGE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    taken = []

    def take(page, name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    yield take
    assert all(path.stat().st_size > 10_000 for path in taken)  # a real page, not a blank one


@pytest.mark.django_db(transaction=True)
def test_operator_retries_a_stalled_workflow_in_chromium(
    live_server, browser_page, chrono_forge_env, shot
):
    demo = build_demo()
    wa.FlakyCharge.perform_later("order-2001", order_id=2001, amount=4999)
    chrono_forge_env.run_all()
    stalled = Workflow.objects.get(key="order-2001")
    assert stalled.state == "stalled"
    User.objects.create_superuser("operator", "ops@example.com", "correct horse")
    page = browser_page
    base = live_server.url

    # log in: the admin's own login form
    page.goto(f"{base}/admin/chrono_forge/workflow/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    assert page.locator(".cf-chip-on").inner_text() == "all"
    assert page.locator("text=stranded ⚠").count() == 2
    shot(page, "workflows")

    # the stalled workflow's timeline: the failing step, its error cards, a collapsible traceback
    page.click("#result_list a:text-is('order-2001')")
    page.wait_for_selector(".cf-timeline")
    banner = page.locator(".cf-banner-rose").first.inner_text()
    assert "Stalled at execute charge" in banner and "failed after 2 attempts" in banner
    assert page.locator(".cf-step.cf-current .cf-step-name").inner_text() == "charge"
    assert page.locator(".cf-current .cf-error").count() == 2
    page.locator(".cf-current .cf-error details summary").first.click()
    assert page.locator(".cf-current .cf-error details[open] pre").first.is_visible()
    shot(page, "workflow-detail")

    # retry: POST with the CSRF token, 303 back to the page, a success message
    wa.CALLS["fixed"] = 1
    page.click("button:text-is('Retry')")
    page.wait_for_selector(".messagelist")
    assert "will be retried shortly" in page.locator(".messagelist").inner_text()
    assert chrono_forge_env.run_all() == 1
    page.reload()
    assert page.locator(".cf-head .cf-pill").first.inner_text() == "completed"
    assert page.locator("text=retried by an operator").count() == 1
    # the charge step: attempts over both tries, its error cards numbered by try, none current
    charge = page.locator(".cf-step", has=page.locator("code:text-is('durably_execute$charge')"))
    assert charge.locator(".cf-attempts").inner_text() == "3 attempts over 2 tries"
    assert charge.locator(".cf-error-attempt").all_inner_texts() == [
        "try 1, attempt 1",
        "try 1, attempt 2",
    ]
    assert page.locator(".cf-banner-rose").count() == 0

    # the operator pages
    page.goto(f"{base}/admin/chrono_forge/workflow/overview/")
    assert (
        page.locator(".cf-card-value").first.inner_text() == "27"
    )  # 22 + 4 children + the retried one
    shot(page, "overview")
    page.goto(f"{base}/admin/chrono_forge/workflow/stranded/")
    assert page.locator("table.cf-table tbody tr").count() == 2
    shot(page, "stranded")
    page.goto(f"{base}/admin/chrono_forge/workflow/waiting/")
    assert "1 event wait stalled beyond 1h 00m" in page.locator(".cf-banner-rose").inner_text()
    shot(page, "waiting")
    page.goto(
        f"{base}/admin/chrono_forge/workflow/{demo['ticker'].pk}/repetitions/?step=poll_prices"
    )
    assert page.locator("text=caught up ×6").count() == 1
    shot(page, "repetitions")
    page.goto(f"{base}/admin/chrono_forge/workflow/{demo['fan'].pk}/change/")
    assert page.locator("text=details →").count() == 1
    shot(page, "branches")
    page.goto(f"{base}/admin/chrono_forge/workflow/{demo['fan'].pk}/branches/{demo['branch'].pk}/")
    assert page.locator("table.cf-table tbody tr").count() == 1  # blocked children only, by default
    shot(page, "branch-children")

    # the Steps and Errors lists, every column on a 1440 px screen
    page.goto(f"{base}/admin/chrono_forge/executionlog/?workflow__id__exact={stalled.pk}")
    assert page.locator("#content h1").inner_text() == "Steps"
    shot(page, "steps")
    page.goto(f"{base}/admin/chrono_forge/errorlog/")
    assert page.locator("#content h1").inner_text() == "Errors"
    shot(page, "errors")
