"""Fan-out benchmark: N trivial children under a real qcluster, beside bare django-q2.

    .venv/bin/python bench/fanout.py                      # 20,000 children (and 2,000), 2 workers
    .venv/bin/python bench/fanout.py --children 5000 --small 1000
    .venv/bin/python bench/fanout.py --db sqlite          # a SQLite file (WAL) instead

On PostgreSQL it starts a throwaway PostgreSQL 15 cluster with scripts/pg (or uses the one
described by the CHRONO_FORGE_PG_* variables) and creates a fresh database; on SQLite it uses a
fresh file in a temporary directory. It starts one qcluster with 2 workers
(bench/settings.py: persistent connections, no Task rows) and measures, in the same run:

* bare django-q2: N trivial tasks bulk-enqueued in one transaction -> tasks/s until the queue
drained; * chrono_forge: a parent whose branch spawn_each-es N children over a QuerySet (automerge):
  - dispatch rate: children spawned per second by the parent's pass (run in its own process);
  - execution throughput: N / (last child completed_at - first child created), like the reference;
  - parent wake delay: the merge completing minus the last child completing;
  - peak RSS of the parent's pass process, at the small and the large N (must stay flat);
* the ratio of chrono_forge's throughput to bare django-q2's (target >= 0.6), and to a raw ORM
  baseline: N tasks each doing a trivial child's writes and commits with plain ORM calls.

Not a test: nothing is asserted; it prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pg import start_durable  # noqa: E402

DB_NAME = "chrono_forge_bench"


# -- environment -----------------------------------------------------------------------------------
def start_postgres(stack):
    if os.environ.get("CHRONO_FORGE_PG_HOST"):
        return  # a cluster the caller started: measured as it is
    start_durable(stack, prefix="chrono_forge-bench-pg.")


def fresh_database():
    import psycopg

    dsn = dict(
        host=os.environ["CHRONO_FORGE_PG_HOST"],
        port=os.environ["CHRONO_FORGE_PG_PORT"],
        user=os.environ["CHRONO_FORGE_PG_USER"],
        password=os.environ.get("CHRONO_FORGE_PG_PASSWORD", ""),
        dbname=os.environ.get("CHRONO_FORGE_PG_NAME", "postgres"),
    )
    with psycopg.connect(**dsn, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DB_NAME}")
    os.environ["CHRONO_FORGE_PG_NAME"] = DB_NAME


def setup_django():
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("CHRONO_FORGE_TEST_DB", "postgres")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


class Cluster:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CHRONO_FORGE_TEST_LOG_LEVEL": "WARNING"}
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self):
        from django_q.models import OrmQ
        from django_q.tasks import async_task

        async_task("bench.workflows.noop", -1)
        deadline = time.monotonic() + 60
        while OrmQ.objects.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"qcluster did not start; see {self.log_path}")
            time.sleep(0.1)

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)  # the main process only
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def wait_until(predicate, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(interval)


# -- measurements ----------------------------------------------------------------------------------
def bare_django_q(n: int) -> dict:
    """N trivial tasks, bulk-enqueued in one transaction (the path chrono_forge's fan-out uses)."""
    from django.db import transaction
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from chrono_forge.dispatch.django_q import CollectingORM

    broker = CollectingORM()
    for index in range(n):
        async_task("bench.workflows.noop", index, q_options={"broker": broker, "ack_failure": True})
    with transaction.atomic():
        broker.flush()
    start = time.monotonic()
    wait_until(lambda: not OrmQ.objects.exists(), timeout=3600)
    elapsed = time.monotonic() - start
    return {"tasks": n, "seconds": elapsed, "rate": n / elapsed}


def raw_orm_children(n: int) -> dict:
    """N tasks doing a trivial child's writes with plain ORM calls (bench.workflows.raw_child)."""
    from django.db import transaction
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from chrono_forge.dispatch.django_q import CollectingORM
    from chrono_forge.models import Workflow

    rows = Workflow.objects.bulk_create(
        [
            Workflow(job_class="bench.workflows.Child", key=f"raw-{i}", kwargs={"item": i})
            for i in range(n)
        ],
        batch_size=2000,
    )
    broker = CollectingORM()
    for row in rows:
        async_task(
            "bench.workflows.raw_child", row.pk, q_options={"broker": broker, "ack_failure": True}
        )
    with transaction.atomic():
        broker.flush()
    start = time.monotonic()
    wait_until(lambda: not OrmQ.objects.exists(), timeout=3600)
    elapsed = time.monotonic() - start
    done = Workflow.objects.filter(key__startswith="raw-", state="completed").count()
    return {"tasks": n, "completed": done, "seconds": elapsed, "rate": n / elapsed}


def parent_pass_in_subprocess(key: str, prefix: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    output = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--parent-pass", key, prefix],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def rss_kb(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> None:
    """Restart the peak (VmHWM) from the current RSS (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_parent_pass(key: str, prefix: str) -> None:
    """(In its own process) the parent's first pass: spawn every child, arm the poller, park."""
    setup_django()
    from django.contrib.auth.models import Group

    from bench.workflows import Parent

    Group.objects.exists()  # connect and warm up before taking the baseline
    reset_peak_rss()
    baseline = rss_kb("VmHWM")
    start = time.monotonic()
    Parent.perform_now(key, prefix=prefix)
    elapsed = time.monotonic() - start
    peak = rss_kb("VmHWM")
    print(json.dumps({"seconds": elapsed, "peak_rss_kb": peak, "baseline_rss_kb": baseline}))


def fan_out(n: int) -> dict:
    from django.contrib.auth.models import Group
    from django.db.models import Max, Min

    from chrono_forge.models import ExecutionLog, Workflow

    prefix, key = f"b{n}", f"bench-{n}"
    Group.objects.bulk_create([Group(name=f"{prefix}-{i:07d}") for i in range(n)], batch_size=5000)
    parent_pass = parent_pass_in_subprocess(key, prefix)

    def parent_done():
        state = Workflow.objects.filter(key=key).values_list("state", flat=True).first()
        if state in ("failed", "stalled"):
            raise SystemExit(f"the parent ended {state}")
        return state == "completed"

    wait_until(parent_done, timeout=4 * 3600, interval=0.5)
    children = Workflow.objects.filter(key__startswith=f"{key}$")
    stats = children.aggregate(first=Min("created"), last=Max("completed_at"))
    completed = children.filter(state="completed").count()
    merge = ExecutionLog.objects.get(workflow__key=key, step_name="merge$fan")
    branch = ExecutionLog.objects.get(workflow__key=key, step_name="branch$fan")
    execution = (stats["last"] - stats["first"]).total_seconds()
    return {
        "children": n,
        "completed": completed,
        "dispatch_seconds": parent_pass["seconds"],
        "dispatch_rate": n / parent_pass["seconds"],
        "exec_seconds": execution,
        "exec_rate": n / execution,
        "wake_delay": (merge.completed_at - stats["last"]).total_seconds(),
        "polls": branch.metadata["poll"]["polls"],
        "rekicked": branch.metadata["poll"]["rekick_total"],
        "peak_rss_mb": parent_pass["peak_rss_kb"] / 1024,
        "rss_growth_mb": (parent_pass["peak_rss_kb"] - parent_pass["baseline_rss_kb"]) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument(
        "--small", type=int, default=2_000, help="the small fan-out (RSS comparison)"
    )
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--parent-pass", nargs=2, metavar=("KEY", "PREFIX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parent_pass:
        return run_parent_pass(*args.parent_pass)

    cleanup: list = []
    try:
        os.environ["CHRONO_FORGE_TEST_DB"] = args.db
        if args.db == "postgres":
            start_postgres(cleanup)
            fresh_database()
            where = f"PostgreSQL {DB_NAME}"
        else:
            workdir = tempfile.mkdtemp(prefix="chrono_forge-bench-fanout.", dir="/tmp")
            where = os.path.join(workdir, "fanout.sqlite3")
            os.environ["CHRONO_FORGE_TEST_DB_NAME"] = where
            cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
        setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        cluster = Cluster(Path(tempfile.gettempdir()) / "chrono_forge-bench-qcluster.log")
        cleanup.append(cluster.stop)
        cluster.wait_ready()
        workers = os.environ.get("BENCH_WORKERS", "2")
        print(f"qcluster: {workers} workers, {where}; log {cluster.log_path}", flush=True)

        bare = bare_django_q(args.children)
        print(
            f"bare django-q2: {bare['tasks']} tasks in {bare['seconds']:.1f}s "
            f"= {bare['rate']:.0f}/s",
            flush=True,
        )
        raw = raw_orm_children(args.children)
        print(
            f"raw ORM children: {raw['completed']}/{raw['tasks']} in {raw['seconds']:.1f}s "
            f"= {raw['rate']:.0f}/s",
            flush=True,
        )
        results = []
        for n in (args.small, args.children):
            result = fan_out(n)
            results.append(result)
            print(
                f"fan-out {n}: {json.dumps({k: round(v, 3) for k, v in result.items()})}",
                flush=True,
            )
        report(bare, raw, results)
    finally:
        for step in reversed(cleanup):
            step()


def report(bare: dict, raw: dict, results: list[dict]) -> None:
    print()
    print(
        "| children | dispatch rate | exec throughput | bare django-q2 | ratio | raw ORM child "
        "| ratio | parent wake delay | polls | peak RSS of the parent pass (growth) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['children']:,} | {r['dispatch_rate']:,.0f}/s | {r['exec_rate']:,.0f}/s "
            f"| {bare['rate']:,.0f}/s | {r['exec_rate'] / bare['rate']:.2f} "
            f"| {raw['rate']:,.0f}/s | {r['exec_rate'] / raw['rate']:.2f} "
            f"| {r['wake_delay']:.1f}s | {r['polls']} "
            f"| {r['peak_rss_mb']:.0f} MB (+{r['rss_growth_mb']:.1f} MB) |"
        )
    print(
        f"\n(baselines: {bare['tasks']:,} tasks in the same run, trivial ones and ones doing a "
        "trivial child's writes with plain ORM calls; target ratio to bare django-q2 >= 0.6; "
        "RSS must stay flat from the small to the large fan-out)"
    )


if __name__ == "__main__":
    main()
