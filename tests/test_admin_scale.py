"""The admin at scale: the operator pages list every row a page at a time, the prefix searches
are exact and case-sensitive, and the indexes the scale bench called for serve the queries they
were added for (checked in the query plan, with sequential scans discouraged on PostgreSQL so
that a tiny test table does not decide the plan)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connections
from django.urls import reverse

from chrono_forge import clock, conf
from chrono_forge.admin import views
from chrono_forge.models import ErrorLog, ExecutionLog, Message, Workflow
from chrono_forge.pages import lists, queries
from tests.admin_fixtures import make_log, make_workflow
from tests.core_sql import capture

pytestmark = pytest.mark.django_db


def url(name, *args):
    return reverse(f"admin:chrono_forge_workflow_{name}", args=args)


def walk(client, target: str) -> list[list[str]]:
    """The keys of every page, following the "next" cursor until there is none."""
    pages, query = [], ""
    while True:
        response = client.get(target + query)
        assert response.status_code == 200
        pages.append([item["workflow"].key for item in response.context["items"]])
        cursor = response.context["next_cursor"]
        if cursor is None:
            return pages
        assert f"?after={cursor}" in response.content.decode()
        query = f"?after={cursor}"


def test_stranded_lists_every_stranded_run_a_page_at_a_time(client, operator, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    old = clock.now() - timedelta(hours=2)
    stranded = [make_workflow("running", key=f"dead-{i}", locked_at=old).key for i in range(8)]
    make_workflow("running", key="alive")  # a fresh lock: not stranded
    pages = walk(client, url("stranded"))
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [key for page in pages for key in page] == stranded
    body = client.get(url("stranded")).content.decode()
    assert "8 stranded workflows." in body


def test_waiting_lists_every_wait_a_page_at_a_time(client, operator, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    now = clock.now()
    expected = []
    for i in range(7):
        workflow = make_workflow("idle", key=f"waits-{i}")
        kind = "continue_if$paid" if i % 2 else "wait_until$shipped"
        make_log(workflow, kind, "pending", started=now - timedelta(minutes=i))
        expected.append(workflow.key)
    scheduled = make_workflow("idle", key="sleeps")  # idle without a wait: not listed
    make_log(scheduled, "wait$pause", "pending")
    done = make_workflow("idle", key="waited")  # its wait completed
    make_log(done, "continue_if$paid", "completed")
    pages = walk(client, url("waiting"))
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sorted(key for page in pages for key in page) == sorted(expected)


def test_waiting_figures_cover_every_wait_not_only_the_page(client, operator, monkeypatch):
    """The stalled-event banner and the oldest wait per class come from all waits: the oldest
    event wait is on the last page, and the banner still names it."""
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    now = clock.now()
    for i in range(5):
        workflow = make_workflow("idle", key=f"recent-{i}", job_class="tests.workflows_admin.Quick")
        make_log(workflow, "continue_if$paid", "pending", started=now - timedelta(hours=2))
    oldest = make_workflow("idle", key="ancient", job_class="tests.workflows_admin.Quick")
    make_log(oldest, "continue_if$signed", "pending", started=now - timedelta(days=3))
    other = make_workflow("idle", key="other-class", job_class="tests.workflows_admin.FlakyCharge")
    make_log(other, "continue_if$paid", "pending", started=now - timedelta(hours=5))
    response = client.get(url("waiting"))
    assert "ancient" not in [i["workflow"].key for i in response.context["items"]]
    assert response.context["stalled_events"] == 7
    assert response.context["oldest_stalled"]["workflow"].key == "ancient"
    by_class = {
        i["workflow"].job_class: i["workflow"].key for i in response.context["oldest_by_class"]
    }
    assert by_class == {
        "tests.workflows_admin.Quick": "ancient",
        "tests.workflows_admin.FlakyCharge": "other-class",
    }
    assert "7 event waits stalled beyond" in response.content.decode()


def test_waiting_and_stranded_queries_do_not_grow_with_rows(client, operator):
    def fill(n):
        for _ in range(n):
            workflow = make_workflow("idle")
            make_log(workflow, "continue_if$paid", "pending", started=clock.now())
            make_workflow("running", locked_at=clock.now() - timedelta(hours=3))

    def count(name):
        client.get(url(name))
        with capture() as captured:
            client.get(url(name))
        return len(captured.captured_queries)

    fill(2)
    small = {name: count(name) for name in ("waiting", "stranded")}
    fill(60)
    assert {name: count(name) for name in ("waiting", "stranded")} == small


# -- the prefix lookup -----------------------------------------------------------------------------
def test_prefix_is_exact_and_case_sensitive():
    for key in ("abc", "abc-1", "abcd", "ABC-2", "ab%c", "ab_c", "xabc", "abd"):
        make_workflow(key=key)

    def keys(prefix):
        return sorted(Workflow.objects.filter(key__prefix=prefix).values_list("key", flat=True))

    assert keys("abc") == ["abc", "abc-1", "abcd"]
    assert keys("ABC") == ["ABC-2"]
    assert keys("ab%") == ["ab%c"]  # % and _ are characters, not wildcards
    assert keys("ab_") == ["ab_c"]
    assert keys("") == sorted(Workflow.objects.values_list("key", flat=True))


def test_prefix_rejects_a_non_string():
    with pytest.raises(TypeError, match="__prefix takes a str"):
        list(Workflow.objects.filter(key__prefix=3))


def test_prefix_bounds_a_range_even_at_the_last_code_point():
    from chrono_forge.lookups import successor

    assert successor("abc") == "abd"
    assert successor("a$") == "a%"
    assert successor("a\U0010ffff") == "b"
    assert successor("\U0010ffff") is None
    assert successor("\ud7ff") == "\ue000"


def test_key_search_in_the_admin_is_a_prefix(client, operator):
    for key in ("order-12", "order-123", "Order-12", "xorder-12"):
        make_workflow(key=key)
    response = client.get(reverse("admin:chrono_forge_workflow_changelist") + "?q=order-12")
    assert sorted(w.key for w in response.context["cl"].result_list) == ["order-12", "order-123"]


# -- the indexes serve their queries ---------------------------------------------------------------
def plan(queryset) -> str:
    """The query plan of ``queryset`` (PostgreSQL: with sequential scans and sorts discouraged, so
    the answer says whether an index *can* serve the query, not what a tiny table prefers)."""
    connection = connections[conf.database()]
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(
            str(row[-1] if connection.vendor == "sqlite" else row[0]) for row in cursor
        )


#: The unique (workflow, step_name) index of the step logs: SQLite names the index of a table's
#: UNIQUE constraint itself.
LOG_WF_STEP = "chrono_forge_log_wf_step|sqlite_autoindex_chrono_forge_executionlog_1"


def uses(index: str, text: str) -> bool:
    """Whether the plan names ``index`` (or one of ``a|b``)."""
    return re.search(rf"\b(?:{index})\b", text) is not None


@pytest.mark.parametrize(
    ("index", "queryset"),
    [
        (
            # On a near-empty table both step-name indexes cost the same to PostgreSQL (8.27), and
            # it picks either; what matters is that no sequential scan is needed.
            "chrono_forge_log_step_prefix|chrono_forge_log_state_step",
            lambda: ExecutionLog.objects.filter(step_name__prefix="branch$").order_by(),
        ),
        (
            # Both indexes serve it; on a near-empty table PostgreSQL's choice between them
            # follows its statistics (when autovacuum last analysed), so either one passes.
            "chrono_forge_log_state_step|chrono_forge_log_step_prefix",
            lambda: ExecutionLog.objects.filter(state="pending", step_name__prefix="continue_if$"),
        ),
        ("chrono_forge_log_state_step", lambda: ExecutionLog.objects.filter(state="failed")),
        (
            "chrono_forge_err_step_prefix",
            lambda: ErrorLog.objects.filter(step_name__prefix="durably_execute$").order_by(),
        ),
        ("chrono_forge_wf_key_prefix", lambda: Workflow.objects.filter(key__prefix="order-1")),
        (
            "chrono_forge_wf_next_run",
            lambda: Workflow.objects.order_by("next_run_at", "id").only("id")[:50],
        ),
        # The foreign keys without an index of their own: an index leading with the column
        # serves them (a workflow's logs and messages: the engine's reads, the deletes of a
        # workflow's rows; a branch's children: the children pages, the SET NULL of a delete).
        (LOG_WF_STEP, lambda: ExecutionLog.objects.filter(workflow_id=1)),
        (LOG_WF_STEP, lambda: ExecutionLog.objects.filter(workflow_id__in=[1, 2]).only("id")),
        (
            "chrono_forge_msg_topic|chrono_forge_msg_idempotency|sqlite_autoindex_chrono_forge_message_1",
            lambda: Message.objects.filter(workflow_id__in=[1, 2]).only("id"),
        ),
        (
            "chrono_forge_wf_parent_state",
            lambda: Workflow.objects.filter(parent_execution_log_id__in=[1, 2]).only("id"),
        ),
    ],
    ids=[
        "step-kind",
        "pending-waits",
        "step-state",
        "error-step",
        "key-search",
        "next-run-sort",
        "workflow-logs",
        "workflows-logs",
        "workflow-messages",
        "branch-children",
    ],
)
def test_the_scale_indexes_serve_their_queries(index, queryset):
    assert uses(index, plan(queryset())), plan(queryset())


def test_every_foreign_key_column_leads_an_index():
    """A foreign key without an index of its own (its column leads another index) is still
    found by an index: the ORM's cascades and SET NULLs filter on the column, and PostgreSQL
    checks a constraint, when a referenced row is deleted, by probing it."""
    connection = connections[conf.database()]
    missing = []
    for model in (Workflow, ExecutionLog, ErrorLog, Message):
        with connection.cursor() as cursor:
            indexes = connection.introspection.get_constraints(cursor, model._meta.db_table)
        leading = {
            c["columns"][0]
            for c in indexes.values()
            if (c["index"] or c["unique"]) and c["columns"]  # a unique constraint's index too
        }
        for field in model._meta.concrete_fields:
            if field.is_relation and field.column not in leading:
                missing.append(f"{model._meta.db_table}.{field.column}")
    assert missing == []


def test_a_deleted_workflows_references_are_checked_along_an_index():
    """When a workflow row is deleted, the database's foreign-key check looks for a step log, an
    error log or a message still pointing at it (PostgreSQL's trigger runs this query per deleted
    row, SQLite with ``foreign_keys`` on the same lookup): each is an index probe, never a scan
    of the table."""
    connection = connections[conf.database()]
    with connection.cursor() as cursor:
        for model in (ExecutionLog, ErrorLog, Message):
            table = model._meta.db_table
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("SET LOCAL enable_bitmapscan = off")
                cursor.execute(
                    f'EXPLAIN SELECT 1 FROM ONLY "{table}" x WHERE "workflow_id" = %s '
                    "FOR KEY SHARE OF x",
                    [1],
                )
                text = "\n".join(row[0] for row in cursor)
                assert "Index" in text and "Seq Scan" not in text, text
            else:
                cursor.execute(
                    f'EXPLAIN QUERY PLAN SELECT 1 FROM "{table}" WHERE "workflow_id" = %s', [1]
                )
                text = "\n".join(str(row[-1]) for row in cursor)
                assert "USING" in text and "INDEX" in text and "SCAN" not in text, text


def test_a_repetitions_page_reads_its_coordination_log_from_the_unique_index():
    """``first()`` would add ``ORDER BY id``, and PostgreSQL then walked the primary key past
    every other step log of the workflow (1.5 s with 100k ticks); ``one()`` has no ORDER BY."""
    workflow = make_workflow("idle")
    queryset = ExecutionLog.objects.filter(workflow_id=workflow.pk, step_name="durably_repeat$beat")
    assert "ORDER BY" not in str(queryset.order_by()[:1].query).upper()
    text = plan(queryset.order_by()[:1])
    assert "_pkey" not in text and "INTEGER PRIMARY KEY" not in text, text
    make_log(workflow, "durably_repeat$beat", "pending")
    assert queryset.one().step_name == "durably_repeat$beat"
    assert ExecutionLog.objects.filter(step_name="nope").one() is None


# -- the overview ----------------------------------------------------------------------------------
def test_overview_counts_are_capped_and_classes_cover_a_window(client, operator, monkeypatch):
    from django.core.cache import cache

    monkeypatch.setattr(lists, "OVERVIEW_COUNT_CAP", 4)
    monkeypatch.setattr(lists, "OVERVIEW_WINDOW", 3)
    for _ in range(6):
        make_workflow("completed", job_class="tests.workflows_admin.Quick")
    for _ in range(3):
        make_workflow("failed", job_class="tests.workflows_admin.FlakyCharge")
    cache.clear()
    with capture() as captured:
        response = client.get(url("overview"))
    context = response.context
    assert (context["processed_text"], context["blocked_text"]) == ("5+", "3")
    # The newest 3 workflows are the failed ones: the per-class table covers only them.
    assert [(c["name"], c["processed"], c["blocked"]) for c in context["classes"]] == [
        ("FlakyCharge", 0, 3)
    ]
    assert "the newest 3 workflows" in response.content.decode()
    for sql in (q["sql"] for q in captured.captured_queries if "chrono_forge_workflow" in q["sql"]):
        upper = sql.upper()
        if "COUNT(" in upper:
            assert "LIMIT" in upper or "WHERE" in upper, f"an unbounded count: {sql}"
        if "GROUP BY" in upper:
            assert '"ID" >=' in upper, f"a GROUP BY over the whole table: {sql}"


# -- no correlated probe of the step-log table -----------------------------------------------------
def correlated(text: str) -> bool:
    """Whether the plan evaluates a subquery once per outer row (SQLite says so; PostgreSQL shows
    a ``SubPlan`` that is not hashed)."""
    return "CORRELATED" in text or re.search(r"(?<!hashed )SubPlan", text) is not None


def wait_filtered(value: str):
    from chrono_forge.admin.filters import WaitKindFilter

    choice = WaitKindFilter(None, {"wait": [value]}, Workflow, None)
    return choice.queryset(None, Workflow.objects.order_by("-id"))[:100]


@pytest.mark.parametrize("value", ["event", "poll"])
def test_the_wait_filters_read_the_pending_waits_once(value):
    """A correlated EXISTS here let SQLite probe the (state, step_name) index once per workflow,
    each probe a range over every pending wait (280 s at 500k workflows); a non-correlated
    semi-join reads that range once."""
    text = plan(wait_filtered(value))
    assert not correlated(text), text
    assert uses("chrono_forge_log_state_step", text), text


def index_only(index: str, text: str) -> bool:
    """Whether the plan reads ``index`` without the table's rows (SQLite: a covering index;
    PostgreSQL: an index-only scan)."""
    pattern = rf"(?:COVERING INDEX|Index Only Scan(?: Backward)? using) (?:{index})\b"
    return re.search(pattern, text) is not None


@pytest.mark.parametrize(
    "prefix", [None, "continue_if$", "wait_until$"], ids=["any", "event", "poll"]
)
def test_the_pending_waits_workflows_come_off_the_index_alone(prefix):
    """The wait filters and the Waiting page read the workflows of the pending waits from the
    (state, step_name, workflow) index alone; with (state, step_name), SQLite fetched the row of
    every pending wait for its workflow_id (0.3-0.6 s at 500k workflows, over 1 s under load)."""
    from chrono_forge.pages import queries as p

    text = plan(Workflow.objects.filter(p.has_pending_wait(prefix)).order_by("id")[:51])
    assert index_only("chrono_forge_log_state_step", text), text


def test_the_wait_filters_keep_their_rows():
    now = clock.now()
    event = make_workflow("idle", key="on-event")
    make_log(event, "continue_if$paid", "pending", started=now)
    poll = make_workflow("idle", key="on-poll")
    make_log(poll, "wait_until$shipped", "pending", started=now)
    done = make_workflow("idle", key="waited")
    make_log(done, "continue_if$paid", "completed", started=now)
    running = make_workflow("running", key="running")
    make_log(running, "continue_if$paid", "pending", started=now)
    assert [w.key for w in wait_filtered("event")] == ["on-event"]
    assert [w.key for w in wait_filtered("poll")] == ["on-poll"]


def test_the_waiting_page_reads_the_pending_waits_once_and_its_rows_waits_by_workflow():
    from chrono_forge.pages import queries as p

    page = Workflow.objects.filter(state="idle").filter(p.has_pending_wait()).order_by("id")
    text = plan(page[:51])
    assert not correlated(text), text
    assert uses("chrono_forge_log_state_step", text), text
    # The page's own waits: probes of the per-workflow indexes, not the table's pending range.
    waits = ExecutionLog.objects.filter(p.wait_steps_q(), workflow_id__in=[1, 2, 3])
    text = plan(waits)
    assert uses(LOG_WF_STEP, text), text
    assert not uses("chrono_forge_log_state_step|chrono_forge_log_step_prefix", text), text


def test_the_latest_wait_of_a_workflow_is_its_pending_one():
    from chrono_forge.pages import queries as p

    now = clock.now()
    workflow = make_workflow("idle")
    make_log(workflow, "continue_if$signed", "pending", started=now - timedelta(hours=1))
    make_log(workflow, "continue_if$paid", "completed", started=now)
    assert p.latest_pending_waits([workflow.pk])[workflow.pk].step_name == "continue_if$signed"


# -- the Steps list ------------------------------------------------------------------------------
def kind_filtered(value: str):
    from chrono_forge.admin.filters import StepKindFilter

    choice = StepKindFilter(None, {"kind": [value]}, ExecutionLog, None)
    return choice.queryset(None, ExecutionLog.objects.order_by("-id"))


@pytest.mark.parametrize("value", ["durably_execute", "continue_if", "workflow"])
def test_the_newest_steps_of_a_kind_come_off_the_kind_index_unsorted(value):
    """A step_name prefix range read and sorted every step of the kind (2.5 s for
    durably_execute at 500k workflows on SQLite); the (kind, id) index yields them in order."""
    text = plan(kind_filtered(value).values_list("pk", flat=True)[:51])
    assert uses("chrono_forge_log_kind", text), text
    assert "TEMP B-TREE" not in text and "Sort" not in text, text


def test_the_kind_filter_keeps_its_rows():
    workflow = make_workflow("idle")
    names = [
        "durably_execute$charge",
        "durably_execute_x$odd",  # another kind sharing the prefix
        "durably_repeat$beat",
        "durably_repeat$beat$1700000000",
        "$workflow_completion$",
        "continue_if$paid",
        "nodollar",
    ]
    for name in names:
        make_log(workflow, name, "completed")

    def steps(value):
        return sorted(kind_filtered(value).values_list("step_name", flat=True))

    assert steps("durably_execute") == ["durably_execute$charge"]
    assert steps("durably_repeat") == ["durably_repeat$beat", "durably_repeat$beat$1700000000"]
    assert steps("workflow") == ["$workflow_completion$"]
    assert steps("continue_if") == ["continue_if$paid"]


@pytest.mark.parametrize("ordering", ["started_at", "completed_at", "-started_at", "-completed_at"])
def test_the_steps_sorted_by_time_come_off_an_index(ordering):
    """The Steps list's sortable time columns (the admin adds ``-pk`` for a stable order): their
    ids come off an index, with at most the ties sorted, instead of a sort of every step."""
    column = ordering.lstrip("-")
    queryset = ExecutionLog.objects.order_by(ordering, "-pk").values_list("pk", flat=True)[:51]
    text = plan(queryset)
    assert uses(f"chrono_forge_log_{column.removesuffix('_at')}", text), text
    assert "USE TEMP B-TREE FOR ORDER BY" not in text, text


def test_a_deep_steps_page_walks_an_index_of_the_ids_alone():
    """``?p=N`` of the Steps list (newest first) skips the ids of every newer step: on SQLite the
    primary key is the table, every row's columns, so the walk read the table up to the offset
    (1.7 s half-way down 4.5M step logs from disk); it walks the id index instead (PostgreSQL:
    either that or its primary-key index, both ids only)."""
    from chrono_forge.admin.paginator import CappedPaginator

    workflow = make_workflow("idle")
    logs = [make_log(workflow, f"durably_execute$s{i}", "completed") for i in range(5)]
    queryset = ExecutionLog.objects.order_by("-id").values_list("pk", flat=True)
    deep = queryset[CappedPaginator.cap : CappedPaginator.cap + 51]
    text = plan(deep)
    assert index_only("chrono_forge_log_id|chrono_forge_executionlog_pkey", text), text
    if connections[conf.database()].vendor == "sqlite":
        assert uses("chrono_forge_log_id", text), text
    assert list(queryset[1:3]) == [logs[3].pk, logs[2].pk]


def test_a_page_past_the_count_cap_reads_its_ids_first(monkeypatch):
    """Past the cap, a page's ids are read alone (no join), then its rows by primary key, in the
    list's order."""
    from chrono_forge.admin.paginator import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "cap", 3)
    workflow = make_workflow("idle")
    logs = [make_log(workflow, f"durably_execute$s{i}", "completed") for i in range(10)]
    queryset = ExecutionLog.objects.select_related("workflow").order_by("-id")
    paginator = CappedPaginator(queryset, 4)
    with capture() as captured:
        pages = [paginator.page(n).object_list for n in (1, 2, 3)]
    assert [[log.pk for log in page] for page in pages] == [
        [log.pk for log in reversed(logs)][i : i + 4] for i in (0, 4, 8)
    ]
    assert pages[0][0].workflow.key == workflow.key  # the join came with the rows
    ids_only = [
        q["sql"]
        for q in captured.captured_queries
        if re.match(r'SELECT "chrono_forge_executionlog"\."id"( AS "pk")? FROM', q["sql"])
        and "JOIN" not in q["sql"].upper()
        and "OFFSET" in q["sql"].upper()
    ]
    assert len(ids_only) == 2, [q["sql"] for q in captured.captured_queries]  # pages 2, 3


def test_the_timeline_is_in_start_order_and_read_from_the_workflows_own_logs():
    """The timeline sorts by an expression of ``started_at``: sorted by the bare column,
    PostgreSQL could walk the whole started_at index for a workflow with many repetition logs
    (3.9 s at 4.5M step logs), guessing that the first rows of the page would come soon."""
    workflow = make_workflow("idle")
    other = make_workflow("idle")
    base = clock.now() - timedelta(hours=1)
    make_log(workflow, "durably_execute$b", started=base + timedelta(seconds=2))
    make_log(workflow, "durably_execute$a", started=base + timedelta(seconds=1))
    make_log(workflow, "durably_execute$tie2", started=base + timedelta(seconds=3))
    make_log(workflow, "durably_execute$tie1", started=base + timedelta(seconds=3))
    make_log(workflow, "durably_repeat$beat$1700000000", started=base)  # summed up elsewhere
    make_log(other, "durably_execute$a", started=base)
    never = make_log(workflow, "durably_execute$never", "pending")
    ExecutionLog.objects.filter(pk=never.pk).update(started_at=None)
    logs, more = queries.timeline_logs(workflow.pk)
    assert [log.step_name for log in logs] == [
        "durably_execute$a",
        "durably_execute$b",
        "durably_execute$tie2",  # ties in id order
        "durably_execute$tie1",
        "durably_execute$never",  # never started: last
    ]
    assert more is False
    connection = connections[conf.database()]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Sorting discouraged: the bare column's index would be the way to avoid it.
            cursor.execute("SET LOCAL enable_sort = off")
    text = plan(queries.timeline_queryset(workflow.pk))
    assert "chrono_forge_log_started" not in text, text
    assert uses(LOG_WF_STEP, text), text
