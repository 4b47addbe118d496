"""The changelists past their capped count (5,000): every row stays reachable. Django's paginator
clamps a page's slice to ``count``, which past the cap is only a floor (5,001): page 101 showed one
row and pages 102+ none. With 20,000 rows of each kind, every page is full up to the real last one,
which holds the oldest rows, a "next" link leads on while rows follow, and a page past the end
says so."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests.core_sql import capture
from tests.factories import log_in_operator

pytestmark = pytest.mark.django_db

ROWS = 20_000
PER_PAGE = 50
LAST_PAGE = ROWS // PER_PAGE  # 400

JOB_CLASS = "tests.workflows_admin.Quick"


@pytest.fixture
def many(client):
    Workflow.objects.bulk_create(
        [Workflow(job_class=JOB_CLASS, key=f"wf-{i:05d}", state="completed") for i in range(ROWS)],
        batch_size=2000,
    )
    owner = Workflow.objects.order_by("pk").first()
    ExecutionLog.objects.bulk_create(
        [ExecutionLog(workflow=owner, step_name=f"durably_execute$s{i:05d}") for i in range(ROWS)],
        batch_size=2000,
    )
    ErrorLog.objects.bulk_create(
        [
            ErrorLog(workflow=owner, error_class="E", error_message=f"msg-{i:05d}")
            for i in range(ROWS)
        ],
        batch_size=2000,
    )
    log_in_operator(client, "admin")
    return client


def rows_of(html: str, pattern: str) -> list[str]:
    return re.findall(pattern, html)


@pytest.mark.parametrize(
    ("model", "pattern", "oldest"),
    [
        ("workflow", r"wf-\d{5}", "wf-00000"),
        ("executionlog", r"durably_execute\$s\d{5}", "durably_execute$s00000"),
        ("errorlog", r"msg-\d{5}", "msg-00000"),
    ],
)
def test_every_page_past_the_count_cap_is_full_down_to_the_oldest_row(many, model, pattern, oldest):
    url = reverse(f"admin:chrono_forge_{model}_changelist")
    if model == "workflow":
        url += "?branch=all"
    sep = "&" if "?" in url else "?"

    def page(number: int) -> str:
        response = many.get(f"{url}{sep}p={number}")
        assert response.status_code == 200
        return response.content.decode()

    first = page(1)
    assert "5000+" in first
    for number in (100, 101, 102, 250, LAST_PAGE):
        html = page(number)
        assert len(set(rows_of(html, pattern))) == PER_PAGE, number
        if number < LAST_PAGE:
            assert f"p={number + 1}" in html and "cf-next-page" in html, number
    last = page(LAST_PAGE)
    assert oldest in last
    assert "cf-next-page" not in last  # nothing follows the oldest rows
    past = page(LAST_PAGE + 1)
    assert rows_of(past, pattern) == []
    assert "past the last one" in past


def test_the_next_link_keeps_filters_and_search(many):
    url = reverse("admin:chrono_forge_workflow_changelist")
    html = many.get(f"{url}?branch=all&q=wf-&p=101").content.decode()
    link = re.search(r'href="([^"]*)" class="cf-next-page"', html).group(1)
    assert "p=102" in link and "q=wf-" in link and "branch=all" in link


def next_link(html: str) -> str:
    return re.search(r'href="([^"]*)" class="cf-next-page"', html).group(1).replace("&amp;", "&")


@pytest.mark.parametrize(
    ("model", "pattern", "oldest"),
    [
        ("workflow", r"wf-\d{5}", "wf-00000"),
        ("executionlog", r"durably_execute\$s\d{5}", "durably_execute$s00000"),
        ("errorlog", r"msg-\d{5}", "msg-00000"),
    ],
)
def test_the_next_link_past_the_cap_seeks_the_rows_older_than_its_page(
    many, model, pattern, oldest
):
    """Past the cap the "next" link carries the page's last id: the next page is the rows below
    it (a seek of the primary key, no OFFSET), the same rows as that page by offset, down to the
    oldest row."""
    url = reverse(f"admin:chrono_forge_{model}_changelist")
    base = url + ("?branch=all" if model == "workflow" else "")
    sep = "&" if "?" in base else "?"
    html = many.get(f"{base}{sep}p={LAST_PAGE - 3}").content.decode()
    for number in range(LAST_PAGE - 2, LAST_PAGE + 1):
        link = next_link(html)
        assert f"p={number}" in link and "before=" in link, link
        with capture() as captured:
            html = many.get(url + link).content.decode()
        # Read before the next request: it empties the connection's log the capture slices.
        ids = [
            q["sql"]
            for q in captured.captured_queries
            if re.match(r'SELECT "chrono_forge_\w+"\."id"( AS "pk")? FROM', q["sql"])
        ]
        assert ids and all("OFFSET" not in sql.upper() for sql in ids), ids
        assert any('"id" <' in sql for sql in ids), ids
        by_offset = many.get(f"{base}{sep}p={number}").content.decode()
        assert rows_of(html, pattern) == rows_of(by_offset, pattern), number
        assert len(set(rows_of(html, pattern))) == PER_PAGE, number
    assert oldest in html
    assert "cf-next-page" not in html  # nothing follows the oldest rows


def test_only_the_next_link_keeps_the_keyset(many):
    """A filter, a sort, a page number or a search leads to that list by offset, not to the rows
    older than an id of another page; an id that cannot be one is ignored, not a filter error."""
    url = reverse("admin:chrono_forge_executionlog_changelist")
    pattern = r"durably_execute\$s\d{5}"
    newest = ExecutionLog.objects.order_by("-pk").values_list("pk", flat=True)[0]
    cursor = newest - 1000  # the rows below it: s18998 and older
    response = many.get(f"{url}?p=150&before={cursor}&q=durably_execute")
    assert response.status_code == 200
    html = response.content.decode()
    assert rows_of(html, pattern)[0] == "durably_execute$s18998"
    nxt = next_link(html)
    assert "p=151" in nxt and "q=durably_execute" in nxt and f"before={cursor - 50}" in nxt, nxt
    others = re.sub(r'<a href="[^"]*" class="cf-next-page"', "", html)
    assert re.findall(r'href="[^"]*before=[^"]*"', others) == []  # sort, filter, page links
    assert 'name="before"' not in html  # the search form's hidden fields
    garbage = many.get(f"{url}?p=150&before=nope")
    assert garbage.status_code == 200  # not the admin's redirect to ?e=1
    by_offset = many.get(f"{url}?p=150").content.decode()
    assert rows_of(garbage.content.decode(), pattern) == rows_of(by_offset, pattern)
    # Sorted by another column, the next page is read by offset: no id in its link.
    assert "before=" not in next_link(many.get(f"{url}?o=5&p=150").content.decode())
