"""Scale bench: every admin page and every operator command over N workflows, on SQLite or a
durable PostgreSQL.

    .venv/bin/python bench/admin_scale.py --db sqlite --workflows 50000
    .venv/bin/python bench/admin_scale.py --db postgres --workflows 500000

It fills a fresh database with a realistic mix (raw multi-row INSERTs: 500k workflows take
minutes): every state (idle ones parked on an event, polling, scheduled, overdue; running ones
some of them stranded), ~8 step logs per workflow, a periodic task (3 ticks) on every fifth
workflow, one with N/5 ticks and one with 1,000, errors with tracebacks on every blocked run,
and 3 branch parents with N/25 children each. Then it times:

* every admin page: each changelist filter, sort, search and a deep page; the operator pages
  (Overview, Waiting, Stranded, Overdue); the workflow pages of a plain run, of the periodic
  task with many ticks and of a branch parent, their Repetitions and Branch children pages;
* every command: ``chrono_forge list`` / ``show``, ``cleanup --dry-run`` (with and without
  ``--prune-repetitions-older-than``), ``reap``, ``resume-overdue``, a real pruning of the
  repetition logs and a real ``cleanup``.

It prints the median wall-clock ms (caches cleared before each round: the cold path) and the
number of queries per page, and the plan of every query that took over 200 ms.

PostgreSQL: a throwaway scripts/pg cluster switched to durable settings (fsync,
synchronous_commit, full_page_writes on), unless CHRONO_FORGE_PG_* point at one. SQLite: a
file in WAL mode with the README's options (tests/settings.py). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pg import durability, start_durable  # noqa: E402

DB_NAME = "chrono_forge_scale"
SLOW_MS = 200
CLASSES = [f"bench.scale.{name}" for name in ("Order", "Invoice", "Refund", "Signup", "Report")]
CHILD_CLASS = "bench.scale.Child"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "/srv/app/flows.py", line 120, in charge\n    gateway.charge(order)\n' * 12
    + "bench.scale.CardDeclined: card declined by issuer (code 51)\n"
)
NOW = datetime.now(UTC).replace(microsecond=0)


# -- environment -----------------------------------------------------------------------------------
def start_postgres(stack: list) -> None:
    if os.environ.get("CHRONO_FORGE_PG_HOST"):
        return  # a cluster the caller started: measured as it is
    start_durable(stack, prefix="chrono_forge-scale-pg.")


def remove_sqlite_files(path: str | Path) -> None:
    """A SQLite database file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def fresh_database(db: str) -> None:
    if db == "sqlite":
        path = Path(tempfile.gettempdir()) / f"{DB_NAME}-{os.getpid()}.sqlite3"
        remove_sqlite_files(path)
        os.environ["CHRONO_FORGE_TEST_DB_NAME"] = str(path)
        return
    import psycopg

    with psycopg.connect(os.environ["CHRONO_FORGE_PG_DSN"], autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DB_NAME}")
    os.environ["CHRONO_FORGE_TEST_DB_NAME"] = DB_NAME


def setup_django(db: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["CHRONO_FORGE_TEST_DB"] = db
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# -- populating ------------------------------------------------------------------------------------
class Inserter:
    """Multi-row ``INSERT ... VALUES (...), (...)`` statements, flushed every few thousand rows."""

    def __init__(self, model, columns: list[str], before: list | None = None):
        from django.db import connection

        self.before = before or []  # inserters holding the rows these reference: flushed first
        self.connection = connection
        self.table = connection.ops.quote_name(model._meta.db_table)
        self.columns = columns
        self.names = ", ".join(connection.ops.quote_name(c) for c in columns)
        self.per_statement = max(1, min(1000, 30000 // len(columns)))
        self.rows: list[tuple] = []
        self.count = 0
        self.json = {
            f.column for f in model._meta.concrete_fields if f.get_internal_type() == "JSONField"
        }
        self.times = {
            f.column
            for f in model._meta.concrete_fields
            if f.get_internal_type() == "DateTimeField"
        }

    def add(self, **values) -> None:
        row = []
        for column in self.columns:
            value = values.get(column)
            if column in self.json:
                value = None if value is None else json.dumps(value)
            elif column in self.times and value is not None:
                value = self.connection.ops.adapt_datetimefield_value(value)
            row.append(value)
        self.rows.append(tuple(row))
        if len(self.rows) >= self.per_statement * 10:
            self.flush()

    def flush(self) -> None:
        for other in self.before:
            other.flush()
        with self.connection.cursor() as cursor:
            for start in range(0, len(self.rows), self.per_statement):
                chunk = self.rows[start : start + self.per_statement]
                one = "(" + ", ".join(["%s"] * len(self.columns)) + ")"
                cursor.execute(
                    f"INSERT INTO {self.table} ({self.names}) "
                    f"VALUES {', '.join([one] * len(chunk))}",
                    [value for row in chunk for value in row],
                )
                self.count += len(chunk)
        self.rows = []


WF_COLUMNS = [
    "id", "created", "modified", "job_class", "key", "kwargs", "options", "context", "state",
    "locked_by", "locked_at", "started_at", "completed_at", "next_run_at", "parked_on",
    "parked_since", "wake_requested", "parent_execution_log_id", "cancel_reason",
]  # fmt: skip
LOG_COLUMNS = [
    "id", "created", "modified", "workflow_id", "step_name", "state", "attempts", "started_at",
    "last_executed_at", "completed_at", "error_class", "error_message", "result", "metadata",
]  # fmt: skip
ERR_COLUMNS = [
    "id", "created", "modified", "workflow_id", "step_name", "attempt", "error_class",
    "error_message", "backtrace", "context",
]  # fmt: skip

STEPS = [
    "durably_execute$fetch",
    "durably_execute$charge",
    "wait$cooldown",
    "durably_execute$notify",
    "wait_until$ready",
    "durably_execute$ship",
    "continue_if$approved",
    "durably_execute$archive",
]


class Population:
    """What the bench needs to know about the rows it wrote."""

    def __init__(self):
        self.wf_id = 0
        self.log_id = 0
        self.err_id = 0
        self.counts: dict[str, int] = {}
        self.big_repeat: int | None = None
        self.small_repeat: int | None = None
        self.parent: int | None = None
        self.parent_branch_log: int | None = None
        self.plain: int | None = None
        self.plain_key = ""
        self.top_level = 0


def populate(n: int, seed: int = 7) -> Population:
    from chrono_forge.models import ErrorLog, ExecutionLog, Workflow

    rng = random.Random(seed)
    pop = Population()
    wfs = Inserter(Workflow, WF_COLUMNS)
    logs = Inserter(ExecutionLog, LOG_COLUMNS, before=[wfs])
    errs = Inserter(ErrorLog, ERR_COLUMNS, before=[wfs])

    def log(wf, name, state="completed", at=None, attempts=1, **extra):
        pop.log_id += 1
        at = at or NOW
        logs.add(
            id=pop.log_id, created=at, modified=at + timedelta(seconds=2), workflow_id=wf,
            step_name=name, state=state, attempts=attempts, started_at=at,
            last_executed_at=at + timedelta(seconds=2),
            completed_at=at + timedelta(seconds=2) if state == "completed" else None,
            error_class=extra.pop("error_class", ""), error_message=extra.pop("error_message", ""),
            result=extra.pop("result", {"ok": True} if state == "completed" else None),
            metadata=extra.pop("metadata", {}),
        )  # fmt: skip
        return pop.log_id

    def error(wf, name, attempt, at):
        pop.err_id += 1
        errs.add(
            id=pop.err_id, created=at, modified=at, workflow_id=wf, step_name=name,
            attempt=attempt, error_class="bench.scale.CardDeclined",
            error_message="card declined by issuer (code 51)", backtrace=TRACEBACK,
            context={"order": wf, "amount": 1999},
        )  # fmt: skip

    def workflow(state, job_class, key, created, parent_log=None):
        pop.wf_id += 1
        wf = pop.wf_id
        started = created + timedelta(seconds=1)
        values = dict(
            id=wf, created=created, modified=created + timedelta(minutes=5), job_class=job_class,
            key=key, kwargs={"order_id": wf, "note": "x" * 40}, options={}, context={"step": 3},
            state=state, started_at=started, wake_requested=False,
            parent_execution_log_id=parent_log, cancel_reason="",
        )  # fmt: skip
        kind = rng.random()
        steps = len(STEPS)
        if state == "completed":
            values["completed_at"] = created + timedelta(minutes=5)
        elif state in ("failed", "stalled"):
            steps = rng.randrange(2, len(STEPS))
        elif state == "running":
            steps = rng.randrange(1, len(STEPS))
            stale = kind < 0.4
            values["locked_by"] = "worker-1"
            values["locked_at"] = NOW - (timedelta(hours=3) if stale else timedelta(seconds=20))
        elif state == "idle":
            if kind < 0.4:  # parked on an event
                steps = 7
                values["parked_on"] = "continue_if$approved"
                values["parked_since"] = created + timedelta(minutes=1)
            elif kind < 0.6:  # polling a condition
                steps = 5
                values["next_run_at"] = NOW + timedelta(minutes=2)
            elif kind < 0.8:  # a durable pause
                steps = 3
                values["next_run_at"] = NOW + timedelta(hours=1)
            elif kind < 0.9:  # an overdue continuation
                steps = 3
                values["next_run_at"] = NOW - timedelta(hours=2)
            else:  # a first pass that never started
                steps = 0
                values["started_at"] = None
                values["next_run_at"] = NOW - timedelta(hours=2)
        wfs.add(**values)
        if parent_log is None:
            pop.top_level += 1
        at = created
        for index, name in enumerate(STEPS[:steps]):
            at = at + timedelta(seconds=30)
            last = index == steps - 1
            if last and state in ("failed", "stalled"):
                for attempt in (1, 2, 3):
                    error(wf, name, attempt, at)
                log(wf, name, "failed", at, attempts=3, error_class="bench.scale.CardDeclined",
                    error_message="card declined by issuer (code 51)")  # fmt: skip
            elif last and state in ("idle", "running") and name.split("$")[0] != "durably_execute":
                log(wf, name, "pending", at, metadata={"condition": name.split("$")[1]})
            else:
                log(wf, name, "completed", at)
        if state == "completed":
            if rng.random() < 0.05:
                error(wf, "durably_execute$charge", 1, at)
            log(wf, "$workflow_completion$", "completed", at)
        if wf % 5 == 0:  # a periodic task with a few ticks (what --prune-repetitions walks)
            ticks = [int((created + timedelta(minutes=m)).timestamp()) for m in (1, 2, 3)]
            log(wf, "durably_repeat$poll", "completed" if state == "completed" else "pending",
                created, metadata={"every": 60, "last_execution_at": datetime.fromtimestamp(
                    ticks[-1], UTC).isoformat()})  # fmt: skip
            for tick in ticks:
                log(wf, f"durably_repeat$poll${tick}", "completed", created,
                    metadata={"scheduled_for": datetime.fromtimestamp(tick, UTC).isoformat()},
                )  # fmt: skip
        return wf

    def pick_state():
        r = rng.random()
        if r < 0.78:
            return "completed"
        if r < 0.82:
            return "failed"
        if r < 0.84:
            return "stalled"
        if r < 0.96:
            return "idle"
        return "running"

    children_each = max(10, n // 25)
    plain_n = n - 3 * (children_each + 1) - 2
    for i in range(plain_n):
        created = NOW - timedelta(days=180) * (1 - i / plain_n) - timedelta(minutes=10)
        wf = workflow(pick_state(), CLASSES[i % len(CLASSES)], f"order-{i:07d}", created)
        if i == plain_n // 2:
            pop.plain, pop.plain_key = wf, f"order-{i:07d}"
    # Two periodic tasks with many ticks (the Repetitions page and the timeline's summary).
    for label, ticks in (("big", max(1000, n // 5)), ("small", 1000)):
        created = NOW - timedelta(days=30)
        wf = workflow("idle", "bench.scale.Heartbeat", f"heartbeat-{label}", created)
        first = int(created.timestamp())
        log(wf, "durably_repeat$beat", "pending", created, metadata={
            "every": 60, "last_execution_at": datetime.fromtimestamp(first + 60 * (ticks - 1), UTC)
            .isoformat()})  # fmt: skip
        for t in range(ticks):
            tick = first + 60 * t
            log(wf, f"durably_repeat$beat${tick}", "completed", created,
                metadata={"scheduled_for": datetime.fromtimestamp(tick, UTC).isoformat()},
            )  # fmt: skip
        setattr(pop, f"{label}_repeat", wf)
    # Branch parents with many children each.
    for b in range(3):
        created = NOW - timedelta(days=100 - b * 40)
        parent = workflow("idle", "bench.scale.Fanout", f"fanout-{b}", created)
        branch = log(parent, "branch$fan", "pending", created, metadata={"sealed": True})
        log(parent, "merge$fan", "pending", created)
        if b == 0:
            pop.parent, pop.parent_branch_log = parent, branch
        logs.flush()  # the children reference the branch log
        for c in range(children_each):
            state = "completed" if c % 20 else rng.choice(["failed", "idle", "stalled"])
            workflow(state, CHILD_CLASS, f"fanout-{b}-child-{c:06d}", created, parent_log=branch)
    for inserter in (wfs, logs, errs):
        inserter.flush()
    pop.counts = {"workflows": wfs.count, "execution_logs": logs.count, "error_logs": errs.count}
    reset_sequences_and_analyze()
    return pop


def reset_sequences_and_analyze() -> None:
    from django.core.management.color import no_style
    from django.db import connection

    from chrono_forge.models import ErrorLog, ExecutionLog, Workflow

    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(
            no_style(), [Workflow, ExecutionLog, ErrorLog]
        ):
            cursor.execute(sql)
    if connection.vendor == "postgresql":
        # What autovacuum does soon after a bulk load (statistics, visibility map).
        connection.ensure_connection()
        old = connection.connection.autocommit
        connection.connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        connection.connection.autocommit = old


# -- measuring -------------------------------------------------------------------------------------
class Result:
    def __init__(self, name, ms, queries, slow):
        self.name, self.ms, self.queries, self.slow = name, ms, queries, slow


def explain(sql: str) -> str:
    from django.db import connection

    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    try:
        with connection.cursor() as cursor:
            cursor.execute(prefix + sql)
            rows = cursor.fetchall()
    except Exception as error:  # a statement EXPLAIN cannot take (a DELETE with RETURNING, ...)
        return f"(no plan: {error})"
    if connection.vendor == "sqlite":
        return "\n".join(f"  {row[-1]}" for row in rows)
    return "\n".join(f"  {row[0]}" for row in rows)


def measure(name: str, run, rounds: int) -> Result:
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, counts, slow = [], [], {}
    connection.queries_log = deque(maxlen=10_000_000)  # Django keeps only 9,000 by default
    for _ in range(rounds):
        cache.clear()
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000)
        counts.append(len(captured.captured_queries))
        for query in captured.captured_queries:
            ms = float(query["time"]) * 1000
            if ms > SLOW_MS:
                slow.setdefault(query["sql"], ms)
    return Result(name, statistics.median(times), max(counts), slow)


def pages(pop: Population) -> list[tuple[str, str]]:
    from django.urls import reverse

    wf = reverse("admin:chrono_forge_workflow_changelist")
    logs = reverse("admin:chrono_forge_executionlog_changelist")
    errs = reverse("admin:chrono_forge_errorlog_changelist")

    # ``?o=`` is a 0-based index into the changelist's list_display, which starts with the
    # action checkbox where the admin has actions (Workflows: class is 1; Steps has none).
    def named(name, *args):
        return reverse(f"admin:chrono_forge_workflow_{name}", args=args)

    # Half-way down each table: an OFFSET page reads that many index entries.
    deep_wf = max(1, pop.top_level // 100)
    deep_logs = max(1, pop.counts["execution_logs"] // 100)
    deep_errs = max(1, pop.counts["error_logs"] // 100)
    out = [
        ("Workflows", wf),
        ("Workflows all (with children)", wf + "?branch=all"),
        ("Workflows branch children", wf + "?branch=child"),
        *((f"Workflows state={s}", f"{wf}?state={s}") for s in (
            "blocked", "in_flight", "idle", "running", "completed", "failed", "stalled")),
        ("Workflows class filter", f"{wf}?job_class={CLASSES[1]}"),
        ("Workflows stranded=yes", wf + "?stranded=yes"),
        *((f"Workflows liveness={v}", f"{wf}?liveness={v}") for v in (
            "overdue", "never_started", "parked")),
        ("Workflows wait=event", wf + "?wait=event"),
        ("Workflows wait=poll", wf + "?wait=poll"),
        ("Workflows created past 7 days",
         wf + "?created__gte=" + quote((NOW - timedelta(days=7)).isoformat())),
        *((f"Workflows sorted by {label}", f"{wf}?o={o}") for o, label in (
            ("1", "class"), ("3", "state"), ("5", "started"), ("6", "next run"), ("7", "updated"))),
        ("Workflows key search", wf + "?q=order-00012"),
        *([("Workflows page 101 (past the count cap)", wf + "?p=101")] if deep_wf > 101 else []),
        (f"Workflows page {deep_wf:,} (half-way)", f"{wf}?p={deep_wf}"),
        ("Steps", logs),
        *((f"Steps kind={k}", f"{logs}?kind={k}") for k in (
            "durably_execute", "branch", "merge", "continue_if", "workflow")),
        *((f"Steps state={s}", f"{logs}?state={s}") for s in ("pending", "failed")),
        ("Steps kind=continue_if&state=pending", logs + "?kind=continue_if&state__exact=pending"),
        ("Steps search merge$", logs + "?q=merge%24"),
        ("Steps sorted by started_at", logs + "?o=5"),
        ("Steps sorted by completed_at", logs + "?o=6"),
        ("Steps sorted by completed_at, newest first", logs + "?o=-6"),
        (f"Steps page {deep_logs:,} (half-way)", f"{logs}?p={deep_logs}"),
        ("Errors", errs),
        ("Errors class filter", errs + "?error_class=bench.scale.CardDeclined"),
        ("Errors search", errs + "?q=durably_execute%24charge"),
        (f"Errors page {deep_errs:,} (half-way)", f"{errs}?p={deep_errs}"),
        ("Overview", named("overview")),
        ("Waiting", named("waiting")),
        ("Stranded", named("stranded")),
        ("Overdue", named("overdue")),
        ("Workflow page (plain)", named("change", pop.plain)),
        ("Workflow page (periodic, many ticks)", named("change", pop.big_repeat)),
        ("Workflow page (branch parent)", named("change", pop.parent)),
        ("Repetitions (1,000 ticks)", named("repetitions", pop.small_repeat) + "?step=beat"),
        ("Repetitions (N/5 ticks)", named("repetitions", pop.big_repeat) + "?step=beat"),
        ("Branch children", named("branch", pop.parent, pop.parent_branch_log)),
        ("Branch children (all)",
         named("branch", pop.parent, pop.parent_branch_log) + "?state=all"),
    ]  # fmt: skip
    return out


def command(*args):
    from django.core.management import call_command

    def run():
        call_command("chrono_forge", *args, stdout=io.StringIO(), stderr=io.StringIO())

    return run


def report(results: list[Result]) -> None:
    width = max(len(r.name) for r in results)
    print(f"\n{'page / command'.ljust(width)}  {'ms':>10}  {'queries':>7}")
    for r in results:
        flag = "  *" if r.ms >= 1000 else ""
        print(f"{r.name.ljust(width)}  {r.ms:>10,.0f}  {r.queries:>7}{flag}")
    print("\n(* : 1 s or more)")
    for r in results:
        for sql, ms in r.slow.items():
            print(f"\n-- {r.name}: a query took {ms:,.0f} ms\n{sql[:1500]}\nplan:\n{explain(sql)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workflows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per page (median)")
    parser.add_argument(
        "--no-destructive", action="store_true", help="skip the real cleanup (it deletes rows)"
    )
    parser.add_argument(
        "--only", help="only pages/commands whose name contains this text (a|b: either)"
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="SQLite: run ANALYZE after populating (timed), the statistics the operations guide"
        " tells a site to gather, which nothing gathers there by itself (PostgreSQL is always"
        " analysed after the load, as autovacuum would)",
    )
    args = parser.parse_args(argv)

    stack: list = []
    try:
        if args.db == "postgres":
            start_postgres(stack)
        fresh_database(args.db)
        setup_django(args.db)
        return run(args)
    finally:
        for undo in reversed(stack):
            undo()
        if args.db == "sqlite" and os.environ.get("CHRONO_FORGE_TEST_DB_NAME"):
            remove_sqlite_files(os.environ["CHRONO_FORGE_TEST_DB_NAME"])


def run(args) -> int:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django_q.models import OrmQ

    from chrono_forge.models import ExecutionLog, Workflow

    start = time.perf_counter()
    pop = populate(args.workflows)
    took = time.perf_counter() - start
    print(f"database: {connection.vendor} ({durability()})")
    print(
        f"populated in {took:,.0f} s: {pop.counts['workflows']:,} workflows, "
        f"{pop.counts['execution_logs']:,} step logs, {pop.counts['error_logs']:,} error logs"
    )
    if args.analyze and connection.vendor == "sqlite":
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        print(f"ANALYZE took {time.perf_counter() - start:,.1f} s")
    client = Client()
    client.force_login(User.objects.create_superuser("bench", password="pw"))
    only = args.only.lower().split("|") if args.only else [""]
    wanted = lambda name: any(text in name.lower() for text in only)  # noqa: E731
    results = []

    def get(url):
        def run():
            response = client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}")

        return run

    def next_link(url):
        """The "next" link of the page at ``url`` as the browser follows it (None: the list is
        within its count cap, and its page links are plain page numbers)."""
        html = client.get(url).content.decode()
        found = re.search(r'href="([^"]*)" class="cf-next-page"', html)
        return url.partition("?")[0] + found.group(1).replace("&amp;", "&") if found else None

    for name, url in pages(pop):
        if wanted(name):
            client.get(url)  # warm per-process caches (templates, content types)
            results.append(measure(name, get(url), args.rounds))
            if name.endswith("(half-way)"):
                # The same page reached by the "next" link of the one before it, which carries
                # that page's last id: a seek of the primary key instead of the OFFSET walk.
                before = re.sub(r"p=(\d+)", lambda m: f"p={int(m.group(1)) - 1}", url)
                link = next_link(before)
                if link is not None:
                    label = name.replace("(half-way)", "(half-way, by the next link)")
                    client.get(link)
                    results.append(measure(label, get(link), args.rounds))
    reads = [
        ("chrono_forge list", command("list")),
        ("chrono_forge list --state blocked", command("list", "--state", "blocked")),
        ("chrono_forge list --overdue", command("list", "--overdue")),
        ("chrono_forge show", command("show", pop.plain_key)),
        ("chrono_forge show (periodic, many ticks)", command("show", "heartbeat-big")),
        ("cleanup --dry-run (90 days)", command("cleanup", "--dry-run", "--no-progress")),
    ]
    for name, run_ in reads:
        if wanted(name):
            results.append(measure(name, run_, 1))
    if wanted("prune"):
        results.append(measure(
            "cleanup --dry-run --prune-repetitions-older-than 0",
            command("cleanup", "--dry-run", "--no-progress", "--prune-repetitions-older-than", "0"),
            1,
        ))  # fmt: skip
    if not args.no_destructive and wanted("prune"):
        # Pruning alone (no workflow is 100 years old): its rows/s, before the real cleanup below.
        before = ExecutionLog.objects.count()
        result = measure(
            "cleanup --prune-repetitions-older-than 0 (real)",
            command("cleanup", "--no-progress", "--older-than", "36500",
                    "--prune-repetitions-older-than", "0"),
            1,
        )  # fmt: skip
        deleted = before - ExecutionLog.objects.count()
        result.name += f" {deleted:,} rows, {deleted / (result.ms / 1000):,.0f} rows/s"
        results.append(result)
    stranded = Workflow.objects.stranded().count()
    overdue = Workflow.objects.overdue().count()
    for name, run_ in (
        (f"reap ({stranded:,} stranded)", command("reap")),
        (f"resume-overdue ({overdue:,} overdue)", command("resume-overdue")),
    ):
        if wanted(name):
            OrmQ.objects.all().delete()
            results.append(measure(name, run_, 1))
            print(f"{name}: {OrmQ.objects.count():,} queue rows written")
    if not args.no_destructive and wanted("cleanup"):
        before = Workflow.objects.count() + ExecutionLog.objects.count()
        from chrono_forge.models import ErrorLog

        before += ErrorLog.objects.count()
        result = measure(
            "cleanup --older-than 0 (real)",
            command("cleanup", "--older-than", "0", "--no-progress"),
            1,
        )
        after = Workflow.objects.count() + ExecutionLog.objects.count() + ErrorLog.objects.count()
        deleted = before - after
        result.name += f" {deleted:,} rows, {deleted / (result.ms / 1000):,.0f} rows/s"
        results.append(result)
    print(f"N = {pop.counts['workflows']:,} workflows")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
