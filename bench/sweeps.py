"""Rows per second of the two liveness sweeps, ``resume_overdue`` and ``reap_stalled``, through
django-q2's ORM broker, beside a baseline measured in the same run: the same deliveries sent one
``dispatch.enqueue`` at a time (what both sweeps did before they enqueued in bulk).

Not a test: it prints numbers and ratios. Each round populates N overdue (or stranded) rows with
one bulk INSERT, times the sweep, and clears the rows and the queue; the variants take turns, so a
load spike on this shared machine hits them alike.

Run (from the repository root; the database is chosen like the tests' settings):

    .venv/bin/python bench/sweeps.py                          # SQLite file (WAL)
    .venv/bin/python bench/sweeps.py --db postgres            # a durable throwaway PostgreSQL

A throwaway database is created (Django's test-database machinery) and destroyed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pg import durability, start_durable  # noqa: E402

JOB = "tests.workflows_core.Counter"


def populate(n: int, kind: str) -> None:
    from django.utils import timezone

    from chrono_forge.models import Workflow

    past = timezone.now() - timedelta(days=1)
    if kind == "overdue":
        rows = (
            Workflow(job_class=JOB, key=f"o{i}", next_run_at=past - timedelta(seconds=i))
            for i in range(n)
        )
    else:
        rows = (
            Workflow(job_class=JOB, key=f"s{i}", state="running", locked_by="dead", locked_at=past)
            for i in range(n)
        )
    Workflow.objects.bulk_create(rows, batch_size=2000)


def clear() -> None:
    from django_q.models import OrmQ

    from chrono_forge.models import Workflow

    Workflow.objects.all().delete()
    OrmQ.objects.all().delete()


def one_by_one(kind: str) -> int:
    """The baseline: the sweep's own rows, pages and deliveries, one enqueue round trip each."""
    from chrono_forge import dispatch
    from chrono_forge.executor import token_for
    from chrono_forge.models import Workflow

    rows = Workflow.objects.overdue() if kind == "overdue" else Workflow.objects.stranded()
    rows = rows.only("id", "job_class", "key", "next_run_at").order_by("pk")
    count, last = 0, None
    while page := list((rows if last is None else rows.filter(pk__gt=last))[:500]):
        last = page[-1].pk
        for row in page:
            if kind == "overdue":
                dispatch.enqueue(row.job_class, row.key, token=token_for(row.next_run_at))
            else:
                dispatch.enqueue(row.job_class, row.key)
            count += 1
    return count


def bulk(kind: str) -> int:
    from chrono_forge.models import Workflow

    if kind == "overdue":
        return Workflow.objects.resume_overdue()
    return Workflow.objects.reap_stalled()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per sweep")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (median)")
    args = parser.parse_args()

    stack: list = []
    os.environ["CHRONO_FORGE_TEST_DB"] = args.db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    try:
        if args.db == "postgres":
            start_durable(stack, prefix="chrono_forge-sweeps-pg.")
        import django

        django.setup()
        from django.db import connection

        from chrono_forge.models import Workflow

        logging.getLogger("chrono_forge").setLevel(logging.ERROR)
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
        try:
            print(f"database: {connection.vendor} ({durability()}); {args.rows} rows per sweep")
            for kind in ("overdue", "stranded"):
                samples: dict[str, list[float]] = {"bulk": [], "one by one": []}
                for _round in range(args.rounds):
                    for name, sweep in (("bulk", bulk), ("one by one", one_by_one)):
                        populate(args.rows, kind)
                        started = time.perf_counter()
                        assert sweep(kind) == args.rows
                        samples[name].append(time.perf_counter() - started)
                        assert Workflow.objects.count() == args.rows
                        clear()
                rates = {name: args.rows / statistics.median(s) for name, s in samples.items()}
                sweep_name = "resume_overdue" if kind == "overdue" else "reap_stalled"
                print(
                    f"{sweep_name:15s} {rates['bulk']:8.0f} rows/s   one enqueue per row "
                    f"{rates['one by one']:8.0f} rows/s   bulk/one-by-one "
                    f"{rates['bulk'] / rates['one by one']:.1f}x"
                )
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
    finally:
        for step in reversed(stack):
            step()


if __name__ == "__main__":
    main()
