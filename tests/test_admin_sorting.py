"""A changelist sorted by a column breaks ties in that column's direction, so an index holding the
column serves a page in order instead of the database sorting every row for it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connections
from django.urls import reverse

from chrono_forge import clock, conf
from chrono_forge.models import Workflow
from tests.factories import log_in_operator
from tests.test_admin_scale import plan

pytestmark = pytest.mark.django_db


def ordering(client, model: str, query: str) -> tuple:
    response = client.get(reverse(f"admin:chrono_forge_{model}_changelist") + query)
    assert response.status_code == 200
    return tuple(dict.fromkeys(response.context["cl"].queryset.query.order_by))


@pytest.mark.parametrize(
    ("model", "query", "expected"),
    [
        ("workflow", "", ("-id",)),  # the default: newest first
        ("workflow", "?o=3", ("state", "pk")),
        ("workflow", "?o=-3", ("-state", "-pk")),
        ("workflow", "?o=6", ("next_run_at", "pk")),
        ("workflow", "?o=-7", ("-modified", "-pk")),
        # class leads the unique (job_class, key) pair: ties broken by key, that index's order
        ("workflow", "?o=1", ("job_class", "key")),
        ("workflow", "?o=-1", ("-job_class", "-key")),
        ("executionlog", "?o=5", ("started_at", "pk")),
        ("executionlog", "?o=-6", ("-completed_at", "-pk")),
        ("errorlog", "", ("-id",)),
    ],
)
def test_a_sorted_list_breaks_ties_in_the_sorted_columns_direction(client, model, query, expected):
    log_in_operator(client, "admin")
    assert ordering(client, model, query) == expected


#: Sorts an index gives in order on each database, with the index (a test database without
#: SQLite statistics; PostgreSQL analysed, as autovacuum soon does).
SERVED_IN_ORDER = {
    # SQLite, without statistics, reads the top-level rows (parent IS NULL) from the (parent,
    # state, id) index, in (state, id) order.
    "sqlite": [
        ("?o=3", "chrono_forge_wf_parent_state"),
        ("?o=-3", "chrono_forge_wf_parent_state"),
    ],
    # PostgreSQL does not take "parent IS NULL" as fixing that index's first column, but walks
    # the next-run index and the unique (job_class, key) index in order, filtering.
    "postgresql": [
        ("?o=6", "chrono_forge_wf_next_run"),
        ("?o=-6", "chrono_forge_wf_next_run"),
        ("?o=1", "chrono_forge_workflow_class_key"),
        ("?o=-1", "chrono_forge_workflow_class_key"),
    ],
}


def test_sorted_workflows_come_off_an_index_without_a_sort(client):
    """With Django's tie-break (``ORDER BY state ASC, id DESC``) no index gave the order in
    either direction: the database sorted every top-level workflow for a page of 50."""
    Workflow.objects.bulk_create(
        [
            Workflow(
                job_class=f"tests.workflows_admin.Class{i % 3}",
                key=f"wf-{i:04d}",
                state="completed" if i % 3 else "failed",
                next_run_at=clock.now() + timedelta(seconds=i * 7 % 300),
            )
            for i in range(300)
        ]
    )
    connection = connections[conf.database()]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chrono_forge_workflow")  # what autovacuum soon does
            # Presorted by the first column, the ties sorted: on 300 rows the cheapest plan, at
            # 500k a sort of a whole state. Off, the plan says whether an index gives the order.
            cursor.execute("SET LOCAL enable_incremental_sort = off")
    log_in_operator(client, "admin")
    for query, index in SERVED_IN_ORDER[connection.vendor]:
        response = client.get(reverse("admin:chrono_forge_workflow_changelist") + query)
        text = plan(response.context["cl"].queryset.values_list("pk", flat=True)[:51])
        assert index in text, (query, text)
        assert "TEMP B-TREE" not in text and "Sort" not in text, (query, text)
