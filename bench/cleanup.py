"""Cleanup throughput and memory: ``chrono_forge.cleanup.run`` over N execution-log rows.

Not a test: it prints numbers beside a raw baseline measured in the same run, as ratios.

* **cleanup**: ``cleanup.run(older_than=30 days)`` over 100 old completed workflows holding N
  execution logs (and N/10 error logs), batch_size 1000; its peak Python memory (tracemalloc).
* **raw**: the same rows removed by three plain unbatched ``DELETE`` statements in one
  transaction (what a hand-written purge would do): the floor.

Run (from the repository root; the database is chosen like the tests' settings):

    .venv/bin/python bench/cleanup.py                       # SQLite file, WAL, IMMEDIATE
    eval "$(scripts/pg start /tmp/cf-bench-pg)"
    CHRONO_FORGE_TEST_DB=postgres .venv/bin/python bench/cleanup.py
    scripts/pg stop /tmp/cf-bench-pg
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from chrono_forge import cleanup, clock  # noqa: E402
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow  # noqa: E402

WORKFLOWS = 100


def fill(rows: int) -> None:
    """``rows`` execution logs under WORKFLOWS old completed workflows (copied inside the DB)."""
    old = clock.now() - timedelta(days=400)
    Workflow.objects.bulk_create(
        Workflow(
            job_class="bench.Old",
            key=f"old{i}",
            state="completed",
            completed_at=old,
            created=old,
            modified=old,
        )
        for i in range(WORKFLOWS)
    )
    first, *others = Workflow.objects.order_by("pk").values_list("pk", flat=True)
    per = rows // WORKFLOWS
    ExecutionLog.objects.bulk_create(
        (
            ExecutionLog(
                workflow_id=first,
                step_name=f"durably_execute$s{i}",
                state="completed",
                result={"payload": "x" * 50},
                metadata={},
                created=old,
                modified=old,
            )
            for i in range(per)
        ),
        batch_size=500,
    )
    ErrorLog.objects.bulk_create(
        ErrorLog(
            workflow_id=first, error_class="E", backtrace="trace " * 20, created=old, modified=old
        )
        for _ in range(per // 10)
    )
    for model in (ExecutionLog, ErrorLog):
        columns = [f.column for f in model._meta.concrete_fields if not f.primary_key]
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(c) for c in columns)
        select = ", ".join(
            "%s" if c == "workflow_id" else connection.ops.quote_name(c) for c in columns
        )
        with connection.cursor() as cursor:
            for workflow_id in others:
                cursor.execute(
                    f"INSERT INTO {table} ({names}) SELECT {select} FROM {table} "
                    f"WHERE workflow_id = %s",
                    [workflow_id, first],
                )


def engine() -> int:
    tracemalloc.start()
    try:
        counts = cleanup.run(older_than=timedelta(days=30), batch_size=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert Workflow.objects.count() == 0, counts
    return peak


def raw() -> int:
    with transaction.atomic():
        ErrorLog.objects.all()._raw_delete(connection.alias)
        ExecutionLog.objects.all()._raw_delete(connection.alias)
        Workflow.objects.all()._raw_delete(connection.alias)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    args = parser.parse_args()

    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        print(
            f"database: {connection.vendor}; {args.rows} execution logs + {args.rows // 10} "
            f"error logs in {WORKFLOWS} workflows; {args.rounds} rounds, median"
        )
        times: dict[str, list[float]] = {"cleanup": [], "raw": []}
        peaks = []
        for _ in range(args.rounds):
            for name, func in (("cleanup", engine), ("raw", raw)):
                fill(args.rows)
                started = time.perf_counter()
                peak = func()
                times[name].append(time.perf_counter() - started)
                if name == "cleanup":
                    peaks.append(peak)
        engine_s, raw_s = (statistics.median(times[n]) for n in ("cleanup", "raw"))
        rows = args.rows * 1.1 + WORKFLOWS
        print(
            f"cleanup.run  {rows / engine_s:9.0f} rows/s ({engine_s:.2f} s, peak Python memory "
            f"{max(peaks) / 1024:.0f} KiB)   raw DELETEs {rows / raw_s:9.0f} rows/s "
            f"({raw_s:.2f} s)   cleanup/raw time {engine_s / raw_s:.2f}"
        )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)


if __name__ == "__main__":
    main()
