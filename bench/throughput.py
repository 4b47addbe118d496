"""Throughput through real workers: many small workflows beside a bare django-q2 task.

    .venv/bin/python bench/throughput.py                  # 2,000 workflows, SQLite and PostgreSQL
    .venv/bin/python bench/throughput.py --db postgres --workflows 5000 --rounds 3

N independent workflows of 3 steps (bench.workflows.ThreeSteps: each step is one small application
write) are enqueued at once (``perform_later`` N times in one transaction) and run by one real
qcluster with 2 workers. The baseline, in the same run and on the same cluster, is a bare django-q2
task doing the same three application writes (bench.workflows.bare_three_writes), enqueued the same
way (``async_task`` N times in one transaction, with ``save=False``: no result row, the fastest a
bare task gets). Rounds alternate baseline and chrono_forge.

Both databases are durable, like production: SQLite in WAL mode with ``synchronous=FULL`` (every
commit synced; ``--sqlite-synchronous NORMAL`` for the README's recipe), PostgreSQL 15 with fsync,
synchronous_commit and full_page_writes on (its own throwaway cluster from scripts/pg, switched back
to durable; scripts/pg turns them off for tests). django-q2 runs with the README's recommended
settings (``queue_limit`` 2, ``save_limit`` 250, ``bulk`` 1) and persistent connections.

Printed per database:

* workflows/s of both and the ratio chrono_forge / bare django-q2 (goal >= 0.6): N over the time
  from the enqueue's commit to the last completion (chrono_forge: the workflow's ``completed_at``;
  the baseline: its last write);
* enqueue-to-start p50/p99: from the enqueue's commit to the item's first application write;
* statements and commits per workflow, all processes (the enqueuer and every qcluster process,
  idle polling included), from a separate counting run of ``--count`` items on a fresh cluster
  (bench/sqlcount.py), so the timed runs are not slowed by the counting;
* the peak RSS of a worker (the processes that ran the writes).

Not a test: nothing is asserted. The machine is shared and noisy; compare the ratios, not the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import fanout  # noqa: E402
from bench.pg import durability, start_durable  # noqa: E402

#: django-q2 as the README recommends running it (bench/settings.py reads these).
PRODUCTION_QUEUE = {"BENCH_QUEUE_LIMIT": "2", "BENCH_SAVE_LIMIT": "250", "BENCH_BULK": "1"}


# -- environment -----------------------------------------------------------------------------------
def create_table() -> None:
    from django.db import connection

    from bench.workflows import THROUGHPUT_TABLE

    key = "BIGSERIAL" if connection.vendor == "postgresql" else "INTEGER"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {THROUGHPUT_TABLE}")
        cursor.execute(
            f"CREATE TABLE {THROUGHPUT_TABLE} (id {key} PRIMARY KEY, item VARCHAR(255) NOT NULL, "
            "step INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, pid INTEGER NOT NULL)"
        )
        cursor.execute(f"CREATE INDEX {THROUGHPUT_TABLE}_item ON {THROUGHPUT_TABLE} (item, step)")


def writes(prefix: str, step: int) -> list[tuple[str, float, int]]:
    """``(item, at, pid)`` of the application writes of one step by the items named ``prefix*``."""
    from django.db import connection

    from bench.workflows import THROUGHPUT_TABLE

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT item, at, pid FROM {THROUGHPUT_TABLE} WHERE step = %s AND item LIKE %s",
            [step, prefix + "%"],
        )
        return cursor.fetchall()


# -- peak RSS --------------------------------------------------------------------------------------
def peak_rss_mb(pids) -> float:
    """The largest ``VmHWM`` (peak resident set) among ``pids``, in MB."""
    peaks = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=float("nan"))


def reset_peak_rss(pids) -> None:
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
        except OSError:
            pass


def cluster_pids(root: int) -> set[int]:
    """The qcluster's processes: ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


# -- one measured batch ----------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def enqueue(kind: str, prefix: str, n: int) -> None:
    """N items of ``kind`` enqueued in one transaction (they become visible at its commit)."""
    from django.db import transaction
    from django_q.tasks import async_task

    from bench.workflows import ThreeSteps

    with transaction.atomic():
        for index in range(n):
            if kind == "bare":
                async_task(
                    "bench.workflows.bare_three_writes",
                    f"{prefix}{index}",
                    q_options={"save": False},  # the fastest bare task: no result row
                )
            else:
                ThreeSteps.perform_later(f"{prefix}{index}", item=index)


def done(kind: str, prefix: str, n: int) -> bool:
    from django.db.models import Q
    from django_q.models import OrmQ

    from bench.workflows import THROUGHPUT_TABLE
    from chrono_forge.models import Workflow

    if kind == "bare":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT COUNT(*) FROM {THROUGHPUT_TABLE} WHERE step = 2 AND item LIKE %s",
                [prefix + "%"],
            )
            finished = cursor.fetchone()[0]
    else:
        runs = Workflow.objects.filter(key__startswith=prefix)
        if runs.filter(Q(state="failed") | Q(state="stalled")).exists():
            raise SystemExit(f"a workflow {prefix}* failed or stalled: see the qcluster log")
        finished = runs.filter(state="completed").count()
    return finished == n and not OrmQ.objects.exists()


def batch(kind: str, prefix: str, n: int, cluster, timeout: float = 3600) -> dict:
    from django.db.models import Max

    from chrono_forge.models import Workflow

    reset_peak_rss(cluster_pids(cluster.process.pid))
    started = time.monotonic()
    enqueue(kind, prefix, n)
    committed = time.time()
    enqueue_seconds = time.monotonic() - started
    fanout.wait_until(lambda: done(kind, prefix, n), timeout=timeout, interval=0.2)
    first = writes(prefix, 0)
    if kind == "bare":
        last = max(at for _, at, _ in writes(prefix, 2))
    else:
        finished = Workflow.objects.filter(key__startswith=prefix).aggregate(
            last=Max("completed_at")
        )
        last = finished["last"].timestamp()
    waits = [at - committed for _, at, _ in first]
    workers = {pid for _, _, pid in first}
    return {
        "n": n,
        "enqueue_seconds": enqueue_seconds,
        "seconds": last - committed,
        "rate": n / (last - committed),
        "start_p50": percentile(waits, 0.50),
        "start_p99": percentile(waits, 0.99),
        # workers still alive (django-q2 recycles one after 500 tasks), peak since the batch began
        "worker_rss_mb": peak_rss_mb(workers & cluster_pids(cluster.process.pid)),
    }


def counted(kind: str, prefix: str, n: int, directory: str) -> dict:
    """Statements and commits per item of one batch, over every process (bench/sqlcount.py)."""
    from bench import sqlcount

    before = sqlcount.totals(directory)
    enqueue(kind, prefix, n)
    with sqlcount.paused():
        fanout.wait_until(lambda: done(kind, prefix, n), timeout=3600, interval=0.2)
        time.sleep(1)  # the monitor's last acknowledgements
    after = sqlcount.totals(directory)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return {name: value / n for name, value in delta.items()}


# -- one database, in its own process --------------------------------------------------------------
def run_database(db: str, args) -> dict:
    workdir = tempfile.mkdtemp(prefix="chrono_forge-throughput.", dir="/tmp")
    os.environ.update(PRODUCTION_QUEUE)
    os.environ["CHRONO_FORGE_TEST_DB"] = db
    os.environ["BENCH_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    if db == "postgres":
        fanout.fresh_database()
    else:
        os.environ["CHRONO_FORGE_TEST_DB_NAME"] = os.path.join(workdir, "throughput.sqlite3")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    create_table()
    where = durability()
    say = lambda line: print(f"[{db}] {line}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"{where}; qcluster logs in {workdir}")

    results: dict[str, list[dict]] = {"bare": [], "chrono_forge": []}
    cluster = fanout.Cluster(Path(workdir) / "qcluster.log")
    try:
        cluster.wait_ready()
        for round_index in range(args.rounds):
            order = ("bare", "chrono_forge") if round_index % 2 == 0 else ("chrono_forge", "bare")
            for kind in order:
                result = batch(kind, f"{kind}-{round_index}-", args.workflows, cluster)
                results[kind].append(result)
                say(f"round {round_index + 1} {kind}: {json.dumps(_rounded(result))}")
    finally:
        cluster.stop()

    directory = os.path.join(workdir, "sql")
    os.environ["BENCH_SQL_COUNTS"] = directory
    from bench import sqlcount

    sqlcount.install(directory)
    cluster = fanout.Cluster(Path(workdir) / "qcluster-counting.log")
    try:
        with sqlcount.paused():
            cluster.wait_ready()
        counts = {kind: counted(kind, f"count-{kind}-", args.count, directory) for kind in results}
    finally:
        cluster.stop()
    say(f"per item, all processes: {json.dumps({k: _rounded(v) for k, v in counts.items()})}")
    return {"db": db, "where": where, "results": results, "counts": counts}


def _rounded(values: dict) -> dict:
    return {name: round(value, 3) for name, value in values.items()}


# -- the profile ----------------------------------------------------------------------------------
def profile(db: str, args) -> None:
    """(``--profile``) cProfile of N workflows' whole path through django-q2's own functions, run in
    this process: the pusher's dequeue and unsigning, the worker loop (the pass) and the monitor's
    result saving and acknowledgement, with the cluster's settings. Printed: the top entries by own
    time and by cumulative time, and the enqueue (``perform_later``) profiled on its own."""
    import cProfile
    import multiprocessing
    import pstats
    import queue

    workdir = tempfile.mkdtemp(prefix="chrono_forge-throughput-profile.", dir="/tmp")
    os.environ.update(PRODUCTION_QUEUE)
    os.environ["CHRONO_FORGE_TEST_DB"] = db
    os.environ["BENCH_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    if db == "postgres":
        fanout.fresh_database()
    else:
        os.environ["CHRONO_FORGE_TEST_DB_NAME"] = os.path.join(workdir, "profile.sqlite3")
    import django

    django.setup()
    from django.core.management import call_command
    from django_q.brokers import get_broker
    from django_q.monitor import save_task
    from django_q.signing import SignedPackage
    from django_q.worker import worker

    call_command("migrate", verbosity=0)
    create_table()
    print(f"{durability()}; {args.workflows} workflows (warm-up: 20)", flush=True)

    def drain() -> None:
        broker = get_broker()
        tasks: queue.Queue = queue.Queue()
        while task_set := broker.dequeue():
            for ack_id, payload in task_set:
                task = SignedPackage.loads(payload)
                task["ack_id"] = ack_id
                tasks.put(task)
        tasks.put("STOP")
        results: queue.Queue = queue.Queue()
        worker(tasks, results, multiprocessing.Value("i", -1))
        while not results.empty():
            task = results.get()
            save_task(task, broker)
            if task["success"] or task.get("ack_failure"):
                broker.acknowledge(task.pop("ack_id"))

    enqueue("chrono_forge", "warm-", 20)
    drain()
    enqueuing = cProfile.Profile()
    enqueuing.runcall(enqueue, "chrono_forge", "profiled-", args.workflows)
    running = cProfile.Profile()
    started = time.perf_counter()
    running.runcall(drain)
    elapsed = time.perf_counter() - started
    per_workflow = elapsed / args.workflows * 1000
    print(f"dequeue + pass + result, in one process: {per_workflow:.2f} ms per workflow")
    if args.profile_file:
        running.dump_stats(args.profile_file)
    for title, stats, order in (
        ("worker path, by own time", running, "tottime"),
        ("worker path, by cumulative time", running, "cumulative"),
        ("enqueue (perform_later), by cumulative time", enqueuing, "cumulative"),
    ):
        print(f"\n== {title} ==")
        pstats.Stats(stats).strip_dirs().sort_stats(order).print_stats(args.profile_top)


# -- the report ------------------------------------------------------------------------------------
def report(runs: list[dict], args) -> None:
    print()
    print(
        f"{args.workflows:,} workflows of 3 steps (one application write each), 2 workers; "
        f"median of {args.rounds} round(s)"
    )
    print(
        "| database | bare django-q2 | chrono_forge | ratio | enqueue-to-start p50 / p99 "
        "(bare; chrono_forge) | statements / commits per workflow (bare; chrono_forge) "
        "| peak worker RSS (bare; chrono_forge) |"
    )
    print("|---|---:|---:|---:|---|---|---|")
    for run in runs:
        bare, ours = (run["results"][kind] for kind in ("bare", "chrono_forge"))

        def median(rows, name):
            return statistics.median(row[name] for row in rows)

        ratio = median(ours, "rate") / median(bare, "rate")
        counts = run["counts"]
        print(
            f"| {run['where']} | {median(bare, 'rate'):,.0f}/s | {median(ours, 'rate'):,.0f}/s "
            f"| {ratio:.2f} "
            f"| {median(bare, 'start_p50'):.1f} / {median(bare, 'start_p99'):.1f} s; "
            f"{median(ours, 'start_p50'):.1f} / {median(ours, 'start_p99'):.1f} s "
            f"| {counts['bare']['statements']:.1f} / {counts['bare']['commits']:.1f}; "
            f"{counts['chrono_forge']['statements']:.1f} / "
            f"{counts['chrono_forge']['commits']:.1f} "
            f"| {median(bare, 'worker_rss_mb'):.0f} MB; {median(ours, 'worker_rss_mb'):.0f} MB |"
        )
    print(
        "\n(goal: ratio >= 0.6; enqueue-to-start is backlog arithmetic with everything enqueued at "
        "once; counts include the enqueue and every qcluster process, idle polling included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=2_000, help="items per batch")
    parser.add_argument("--rounds", type=int, default=1, help="baseline/chrono_forge pairs")
    parser.add_argument("--count", type=int, default=200, help="items of the counting run")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the worker path in this process instead (one database: --db)",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="entries per profile table")
    parser.add_argument("--profile-file", help="also write the worker path's pstats to this file")
    parser.add_argument("--run-database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        if args.db == "both":
            parser.error("--profile runs on one database: --db sqlite or --db postgres")
        cleanup: list = []
        try:
            if args.db == "postgres":
                start_durable(cleanup, prefix="chrono_forge-throughput-pg.")
            profile(args.db, args)
        finally:
            for step in reversed(cleanup):
                step()
        return
    if args.run_database:
        print(json.dumps(run_database(args.run_database, args)))
        return

    databases = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    cleanup: list = []
    runs = []
    try:
        if "postgres" in databases:
            start_durable(cleanup, prefix="chrono_forge-throughput-pg.")
        for db in databases:
            command = [sys.executable, str(Path(__file__).resolve()), "--run-database", db]
            for name in ("workflows", "rounds", "count", "sqlite_synchronous"):
                command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            output = subprocess.run(
                command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT
            ).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        for step in reversed(cleanup):
            step()
    report(runs, args)


if __name__ == "__main__":
    main()
