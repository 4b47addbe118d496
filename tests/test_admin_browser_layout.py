"""The admin's layout in a real browser at the two common desktop widths (1366×768 and 1920×1080).

Debian's Chromium driven by Playwright (never a downloaded browser), as in test_admin_browser.py.
On every list and operator page the key columns must be on screen: each checked element is visible,
lies inside the viewport's width, is not cut off by an ancestor that clips (``overflow`` other than
``visible``, such as the changelist's horizontally scrolling results box) and the page itself has no
horizontal scrollbar. The workflow page is checked for a stalled run, a run retried twice, a run
parked on an event and a branch parent.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connections

from chrono_forge.models import Workflow
from tests import workflows_admin as wa
from tests.admin_demo import build_demo
from tests.admin_fixtures import make_error
from tests.test_admin_browser import ARGS, CHROMIUM

VIEWPORTS = [(1366, 768), (1920, 1080)]
LONG_MESSAGE = "upstream said: " + "the warehouse replica is read-only during failover; " * 6

#: Problems of each element matched by a selector: not rendered, past the viewport's right edge, or
#: cut off by an ancestor that clips its overflow.
CLIPPED = """
(selector) => {
  const width = document.documentElement.clientWidth;
  const problems = [];
  const elements = document.querySelectorAll(selector);
  if (!elements.length) problems.push(`${selector}: nothing matches`);
  for (const el of elements) {
    const box = el.getBoundingClientRect();
    const name = `${selector} "${el.textContent.trim().replace(/\\s+/g, " ").slice(0, 40)}"`;
    if (box.width === 0 || box.height === 0 || getComputedStyle(el).visibility === "hidden") {
      problems.push(`${name}: not rendered`);
      continue;
    }
    if (box.left < -0.5 || box.right > width + 0.5) {
      const span = `${Math.round(box.left)}-${Math.round(box.right)}`;
      problems.push(`${name}: spans ${span} px of ${width}`);
    }
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      const style = getComputedStyle(up);
      if (style.overflowX === "visible" && style.overflowY === "visible") continue;
      const clip = up.getBoundingClientRect();
      if (box.left < clip.left - 0.5 || box.right > clip.right + 0.5) {
        problems.push(`${name}: cut off by <${up.tagName.toLowerCase()} class="${up.className}">`);
        break;
      }
    }
  }
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1) {
    problems.push(`the page scrolls sideways: ${page.scrollWidth} px of ${page.clientWidth}`);
  }
  return problems;
}
"""


def assert_on_screen(page, *selectors: str) -> None:
    problems = [problem for sel in selectors for problem in page.evaluate(CLIPPED, sel)]
    assert not problems, f"{page.url}:\n" + "\n".join(problems)


@pytest.fixture(params=VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def sized_page(request, monkeypatch):
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: apt-get install -y chromium (scripts/test installs it)"
        )
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see test_admin_browser.py
    from playwright.sync_api import sync_playwright

    width, height = request.param
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(
                viewport={"width": width, "height": height}, color_scheme="light"
            )
            yield context.new_page()
        finally:
            browser.close()
            connections.close_all()


def build_runs(env) -> dict:
    """The demo fleet plus runs made by the engine: stalled, retried twice, parked on an event."""
    demo = build_demo()
    wa.FlakyCharge.perform_later("order-2001", order_id=2001, amount=4999)
    wa.FlakyCharge.perform_later("order-2002", order_id=2002, amount=1250)
    wa.ManualApproval.perform_later("refund-88")
    env.run_all()
    twice = Workflow.objects.get(key="order-2002")
    for _ in range(2):  # an operator retried it twice; the card is still declined
        twice.refresh_from_db()
        twice.retry_later()
        env.run_all()
    runs = {key: Workflow.objects.get(key=key) for key in ("order-2001", "order-2002", "refund-88")}
    make_error(demo["failed"], "durably_execute$collect_sales", message=LONG_MESSAGE)
    assert [run.state for run in runs.values()] == ["stalled", "stalled", "idle"]
    assert runs["refund-88"].parked_on == "continue_if$manual_approval"
    return {**demo, **runs}


def log_in(page, base: str) -> None:
    User.objects.create_superuser("operator", "ops@example.com", "correct horse")
    page.goto(f"{base}/admin/login/?next=/admin/chrono_forge/workflow/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")


NAV = ".cf-nav a"
HEADERS = "#result_list thead th"


@pytest.mark.django_db(transaction=True)
def test_lists_show_every_column_on_screen(live_server, sized_page, chrono_forge_env):
    build_runs(chrono_forge_env)
    page = sized_page
    base = live_server.url
    log_in(page, base)

    # Workflows: one navigation (the tabs), every column, the parked run's badge
    assert page.locator(".object-tools a").count() == 0  # no second row of links beside the tabs
    assert_on_screen(page, NAV, HEADERS, "#result_list td.field-updated", ".cf-chip")
    parked = page.locator("#result_list tr", has=page.locator("a:text-is('refund-88')"))
    assert parked.locator(".cf-pill").inner_text() == "parked"
    assert "event continue_if$manual_approval" in parked.locator(".cf-pill").get_attribute("title")

    # Steps, every page of names alike: title, breadcrumbs, tab
    page.goto(f"{base}/admin/chrono_forge/executionlog/")
    assert page.locator(".cf-nav a.cf-on").inner_text() == "Steps"
    assert page.locator("#content h1").inner_text() == "Steps"
    assert page.locator(".breadcrumbs").inner_text().endswith("Steps")
    assert_on_screen(
        page, HEADERS, "#result_list td[class*=field-attempts]", "#result_list td.field-completed"
    )

    # Errors: long messages are cut short, the whole text in the tooltip
    page.goto(f"{base}/admin/chrono_forge/errorlog/")
    assert page.locator(".cf-nav a.cf-on").inner_text() == "Errors"
    assert page.locator("#content h1").inner_text() == "Errors"
    assert page.locator(".breadcrumbs").inner_text().endswith("Errors")
    assert_on_screen(page, HEADERS, "#result_list td.field-short_message")
    message = page.locator("td.field-short_message span", has_text="upstream said")
    assert message.inner_text().endswith("…") and len(message.inner_text()) == 80
    assert message.get_attribute("title") == LONG_MESSAGE


@pytest.mark.django_db(transaction=True)
def test_workflow_and_operator_pages_fit(live_server, sized_page, chrono_forge_env):
    runs = build_runs(chrono_forge_env)
    page = sized_page
    base = live_server.url
    log_in(page, base)
    step_row = ".cf-step-main > *"

    def open_workflow(workflow) -> None:
        page.goto(f"{base}/admin/chrono_forge/workflow/{workflow.pk}/change/")
        page.wait_for_selector(".cf-head")

    open_workflow(runs["order-2001"])  # stalled
    assert "Stalled at execute charge" in page.locator(".cf-banner-rose").first.inner_text()
    assert_on_screen(page, NAV, ".cf-head", ".cf-actions .cf-button", ".cf-banner", step_row)
    assert page.locator(".cf-current .cf-here").is_visible()

    open_workflow(runs["order-2002"])  # stalled again after two operator retries
    assert page.locator("text=retried by an operator").count() == 2
    assert_on_screen(page, NAV, ".cf-head", ".cf-banner", step_row, ".cf-error-head > *")

    open_workflow(runs["refund-88"])  # parked on an event
    assert "Parked on event" in page.locator(".cf-liveness").inner_text()
    assert_on_screen(page, NAV, ".cf-head", ".cf-banner", step_row)

    open_workflow(runs["fan"])  # a branch parent
    assert_on_screen(page, NAV, ".cf-head", step_row, ".cf-section table.cf-table th")

    for name, rows in (("waiting", 3), ("stranded", 2), ("overdue", 1)):
        page.goto(f"{base}/admin/chrono_forge/workflow/{name}/")
        assert page.locator(".cf-nav a.cf-on").inner_text() == name.capitalize()
        assert page.locator("table.cf-table tbody tr").count() >= rows
        assert_on_screen(page, NAV, "table.cf-table th", "table.cf-table tbody td")

    branch = f"{base}/admin/chrono_forge/workflow/{runs['fan'].pk}/branches/{runs['branch'].pk}/"
    page.goto(branch)
    assert_on_screen(page, NAV, ".cf-card", "table.cf-table th", ".cf-toolbar .cf-button")


@pytest.mark.django_db(transaction=True)
def test_current_position_stands_out_in_dark_mode(live_server, sized_page, chrono_forge_env):
    runs = build_runs(chrono_forge_env)
    page = sized_page
    page.emulate_media(color_scheme="dark")
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/chrono_forge/workflow/{runs['order-2001'].pk}/change/")
    ratio = page.evaluate(CONTRAST, ".cf-current .cf-here")
    assert ratio >= 4.5, f"'current position' contrast {ratio:.2f}:1 on the dark page"
    ring = page.evaluate(
        "(s) => getComputedStyle(document.querySelector(s)).boxShadow", ".cf-current"
    )
    assert "rgb(125, 211, 252)" in ring  # the light sky ring, not Django's dark --primary


#: WCAG contrast ratio of an element's text colour against the page background.
CONTRAST = """
(selector) => {
  const rgb = (value) => value.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const el = document.querySelector(selector);
  let bg = el;
  const transparent = /rgba\\(.*, 0\\)|transparent/;
  const clear = (node) => transparent.test(getComputedStyle(node).backgroundColor);
  while (bg && clear(bg)) bg = bg.parentElement;
  const a = lum(rgb(getComputedStyle(el).color));
  const b = lum(rgb(getComputedStyle(bg || document.body).backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
"""
