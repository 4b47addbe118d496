"""Scale guards: no admin page counts a whole table, and the changelist and the workflow page issue
the same number of queries whatever the number of rows."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse

from chrono_forge import clock
from tests.admin_fixtures import make_error, make_log, make_workflow
from tests.core_sql import capture

pytestmark = pytest.mark.django_db

LIST = reverse("admin:chrono_forge_workflow_changelist")
COUNT = re.compile(r"\bCOUNT\(", re.IGNORECASE)


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


def page_queries(client, target) -> list[str]:
    client.get(target)  # warm per-process caches (content types) so both sides compare alike
    cache.clear()  # the class-filter lookups and the overview are cached: measure the cold path
    with capture() as captured:
        response = client.get(target)
    assert response.status_code == 200, target
    return [q["sql"] for q in captured.captured_queries]


def assert_counts_are_capped(queries: list[str]) -> None:
    for sql in queries:
        if COUNT.search(sql):
            head, _, inner = sql.partition("FROM (")
            assert COUNT.search(head) and "LIMIT" in inner.upper(), f"unbounded COUNT: {sql}"


def fleet(n: int):
    """n workflows in every state (some stranded), each with a step; idle ones wait on an event."""
    now = clock.now()
    for i in range(n):
        state = ("completed", "stalled", "idle", "running", "failed")[i % 5]
        extra = {"locked_at": now - timedelta(hours=2)} if state == "running" and i % 2 else {}
        workflow = make_workflow(state, **extra)
        make_log(workflow, "durably_execute$a")
        if state == "idle":
            make_log(workflow, "continue_if$paid", "pending", metadata={"condition": "paid"})


def test_changelist_queries_do_not_grow_with_rows(client, operator):
    fleet(1)
    small = page_queries(client, LIST)
    fleet(200)
    large = page_queries(client, LIST)
    assert len(small) == len(large), "\n".join(large)
    assert_counts_are_capped(large)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?state=blocked",
        "?branch=all&state=in_flight",
        "?q=wf-1",
        "?stranded=yes",
        "?wait=event",
        "?job_class=tests.workflows_admin.Quick",
        "?all=",
        "?p=2",
    ],
)
def test_changelist_never_counts_the_whole_table(client, operator, query):
    fleet(60)
    assert_counts_are_capped(page_queries(client, LIST + query))


def test_paginator_shows_a_capped_count(client, operator, monkeypatch):
    from chrono_forge.admin.paginator import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "cap", 30)
    fleet(40)
    response = client.get(LIST + "?branch=all")
    body = response.content.decode()
    assert "30+ workflows" in body and "0 of 30+ selected" in body
    assert client.get(LIST + "?branch=all&p=1").status_code == 200


def test_change_page_queries_do_not_grow_with_steps(client, operator):
    def workflow_with(steps: int):
        workflow = make_workflow("stalled")
        start = clock.now() - timedelta(hours=1)
        for i in range(steps):
            make_log(
                workflow,
                f"durably_execute$s{i}",
                started=start + timedelta(seconds=i),
                result={"i": i},
            )
            make_error(workflow, f"durably_execute$s{i}")
        make_log(workflow, "durably_repeat$tick", "pending", metadata={"every": 60})
        for i in range(steps):
            make_log(
                workflow,
                f"durably_repeat$tick${1000 + i}",
                metadata={"scheduled_for": start.isoformat()},
            )
        return workflow

    small = page_queries(client, url("change", workflow_with(1).pk))
    large = page_queries(client, url("change", workflow_with(200).pk))
    assert len(small) == len(large), "\n".join(small)
    assert_counts_are_capped(large)


def test_operator_pages_never_count_the_whole_table(client, operator):
    fleet(30)
    parent = make_workflow("idle", key="fan")
    branch = make_log(parent, "branch$items", "pending")
    make_log(parent, "durably_repeat$tick", "pending", metadata={"every": 60})
    make_log(parent, "durably_repeat$tick$1000", metadata={})
    for i in range(5):
        make_workflow("stalled", key=f"child-{i}", parent_execution_log=branch)
    for target in (
        url("stranded"),
        url("waiting"),
        url("change", parent.pk),
        url("branch", parent.pk, branch.pk) + "?state=all",
        url("repetitions", parent.pk) + "?step=tick",
        reverse("admin:chrono_forge_executionlog_changelist"),
        reverse("admin:chrono_forge_executionlog_changelist") + "?kind=durably_execute",
        reverse("admin:chrono_forge_errorlog_changelist"),
    ):
        assert_counts_are_capped(page_queries(client, target))


def test_waiting_resolves_waits_in_one_query(client, operator):
    fleet(5)
    small = page_queries(client, url("waiting"))
    fleet(100)
    large = page_queries(client, url("waiting"))
    assert len(small) == len(large)


def test_overview_aggregates_once_and_is_cached(client, operator):
    fleet(10)
    first = page_queries(client, url("overview"))
    grouped = [sql for sql in first if "GROUP BY" in sql.upper()]
    assert len(grouped) == 1
    with capture() as again:
        client.get(url("overview"))
    assert not [q for q in again.captured_queries if "GROUP BY" in q["sql"].upper()]
