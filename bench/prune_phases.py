"""Where repetition pruning spends its time on SQLite, and what SQLite's knobs change about it.

    .venv/bin/python -u bench/prune_phases.py --workflows 200000
    .venv/bin/python -u bench/prune_phases.py --workflows 200000 --variant batch=10000,cache_mib=64

It fills one SQLite file (WAL, the README's options) with ``admin_scale``'s mix, then, for each
variant, copies that file and runs ``cleanup.run(prune_repetitions_older_than=0)`` on the copy,
so every variant prunes the same rows from the same pages. It prints the time of the SELECT
statements (the one finding what may go, and the links read), the DELETE statements, the
commits (SQLite writes the changed pages to the WAL there, and copies them into the database
file at each automatic checkpoint, syncing both), and a final ``wal_checkpoint(TRUNCATE)`` (what
a variant that defers checkpoints still owes), and the rest (Python, the few UPDATEs). Rows/s
are over all of it.

A variant is ``key=value`` pairs: ``batch`` (cleanup's batch_size), ``cache_mib`` (``PRAGMA
cache_size``), ``checkpoint`` (``PRAGMA wal_autocheckpoint``, pages; 0 = only the final one),
``synchronous`` (``OFF`` is not durable: a reference for how much is the disk). Not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import admin_scale  # noqa: E402

DEFAULT_VARIANTS = [
    "batch=1000",
    "batch=10000,cache_mib=64",
    "batch=10000,cache_mib=64,checkpoint=20000",
    "batch=1000,checkpoint=0",
    "batch=1000,synchronous=OFF",
]


def parse(variant: str) -> dict[str, str]:
    pairs = dict(part.split("=", 1) for part in variant.split(",") if part)
    unknown = set(pairs) - {"batch", "cache_mib", "checkpoint", "synchronous"}
    if unknown:
        raise SystemExit(f"unknown variant key(s): {', '.join(sorted(unknown))}")
    return pairs


def prune(variant: dict[str, str]) -> dict[str, float]:
    from django.db import connection

    from chrono_forge import cleanup

    spent: dict[str, float] = defaultdict(float)

    def timed(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            verb = sql.lstrip().split(None, 1)[0].upper()
            spent["SELECT" if verb == "WITH" else verb] += time.perf_counter() - start

    connection.ensure_connection()
    with connection.cursor() as cursor:
        if "cache_mib" in variant:
            cursor.execute(f"PRAGMA cache_size = -{int(variant['cache_mib']) * 1024}")
        if "checkpoint" in variant:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(variant['checkpoint'])}")
        if "synchronous" in variant:
            cursor.execute(f"PRAGMA synchronous = {variant['synchronous']}")
    commit = connection._commit

    def timed_commit():
        start = time.perf_counter()
        try:
            return commit()
        finally:
            spent["COMMIT"] += time.perf_counter() - start

    connection._commit = timed_commit
    start = time.perf_counter()
    try:
        with connection.execute_wrapper(timed):
            counts = cleanup.run(
                older_than=timedelta(days=36500),
                prune_repetitions_older_than=timedelta(0),
                batch_size=int(variant.get("batch", 1000)),
            )
        checkpoint = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        spent["final checkpoint"] = time.perf_counter() - checkpoint
    finally:
        del connection._commit
    spent["total"] = time.perf_counter() - start
    spent["rows"] = counts["repetition_logs"]
    return spent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=200_000)
    parser.add_argument(
        "--variant", action="append", help=f"repeatable (default: {' '.join(DEFAULT_VARIANTS)})"
    )
    args = parser.parse_args(argv)
    variants = [(text, parse(text)) for text in args.variant or DEFAULT_VARIANTS]

    directory = Path(tempfile.mkdtemp(prefix="chrono_forge-prune."))
    work, source = directory / "work.sqlite3", directory / "populated.sqlite3"
    os.environ["CHRONO_FORGE_TEST_DB_NAME"] = str(work)
    try:
        admin_scale.setup_django("sqlite")
        from django.db import connection

        began = time.perf_counter()
        pop = admin_scale.populate(args.workflows)
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
        shutil.copyfile(work, source)
        print(
            f"populated in {time.perf_counter() - began:,.0f} s: {pop.counts['workflows']:,}"
            f" workflows, {pop.counts['execution_logs']:,} step logs"
        )
        columns = ("SELECT", "DELETE", "COMMIT", "final checkpoint")
        print(f"{'variant':44} {'rows':>8} " + " ".join(f"{c:>8}" for c in columns[:3])
              + f" {'final ckpt':>10} {'rest':>8} {'total s':>8} {'rows/s':>8}")  # fmt: skip
        for text, variant in variants:
            admin_scale.remove_sqlite_files(work)
            shutil.copyfile(source, work)
            spent = prune(variant)
            connection.close()
            print(
                f"{text:44} {spent['rows']:>8,.0f} "
                + " ".join(f"{spent[c]:>8.2f}" for c in columns[:3])
                + f" {spent['final checkpoint']:>10.2f}"
                + f" {spent['total'] - sum(spent[c] for c in columns):>8.2f} {spent['total']:>8.2f}"
                f" {spent['rows'] / spent['total']:>8,.0f}"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
