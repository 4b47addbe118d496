"""Chaos bench: real qclusters SIGKILLed at random moments and queue rows deleted, then a check that
every workflow still completes and that no step body ever ran after its completion was committed.

    .venv/bin/python bench/chaos.py --db sqlite                # a SQLite file (WAL)
    .venv/bin/python bench/chaos.py --db postgres              # a scripts/pg cluster, fsync on
    .venv/bin/python bench/chaos.py --db sqlite --workflows 10 --kills 3 --faults kill,continuation

Not a test (tests/test_chaos_e2e.py runs a short version of the same driver). One run:

* starts a qcluster (bench/chaos_settings.py: short MAX_DURATION, REAP_STALE_AFTER and
  RESUME_OVERDUE_GRACE) and enqueues ``--workflows`` ChaosSteps workflows of ``--steps`` steps,
  each with a durable pause half-way, plus ``--fanouts`` ChaosFanout workflows whose branch
  spawns ``--children`` children merged by a poller (bench/workflows.py);
* ``--kills`` times, after a random stretch of work: SIGKILL of the cluster's whole process group;
  while it is down, deletion of queue rows (django-q2 OrmQ rows) of the enabled kinds: a first
  delivery (``first``), a continuation (``continuation``), a merge poller (``poller``), a child's
  first delivery (``child``), ``--deletions`` workflows' worth of each; then a new cluster. Rows are
  deleted only while no cluster runs, so a deleted row is certainly lost (no worker holds it);
* meanwhile the driver runs ``Workflow.objects.reap_stalled()`` and ``resume_overdue()`` every
  ``--sweep-every`` seconds, as the maintenance schedules would;
* waits until no workflow is idle or running (or ``--timeout``), and reports.

Every step body records its execution in a side table, in its own committed transaction, together
with whether the step's completion was already committed at that moment. The report gives
workflows completed / lost, the largest number of executions of any step, every step body that ran
after its step was recorded completed, and the time from the last fault to the last completion.
The exit status is non-zero when a workflow was lost or a completed step ran again.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pg import durability, start_durable  # noqa: E402

SETTINGS = "bench.chaos_settings"

#: Every fault the bench can inject; the queue-row kinds are deleted while the cluster is down.
FAULT_KINDS = ("kill", "first", "continuation", "poller", "child")
QUEUE_KINDS = FAULT_KINDS[1:]
PREFIX = "chaos"
RUN_WORKFLOW = "chrono_forge.tasks.run_workflow"
POLL_MERGE = "chrono_forge.tasks.poll_merge"
_RUNNING = re.compile(r"Q Cluster \S+ \[[^\]]*\] running\.")


@dataclass
class Plan:
    """What one chaos run does (the CLI options, with the bench's defaults)."""

    workflows: int = 30
    steps: int = 10
    fanouts: int = 2
    children: int = 4
    kills: int = 12
    deletions: int = 2  # workflows whose queue rows of each enabled kind are deleted
    faults: tuple[str, ...] = FAULT_KINDS
    seed: int = 1
    timeout: float = 300.0  # seconds, the whole run
    gap: tuple[float, float] = (0.3, 2.5)  # seconds of work between a cluster's start and its kill
    settle: float = 10.0  # seconds a kill owing queue rows of a kind may wait for such rows
    sweep_every: float = 1.0
    pause: float = 2.0  # the durable pause half-way through each ChaosSteps workflow
    work: float = 0.2  # mean seconds of one step body (a sleep: the bench stays light on CPU)

    def __post_init__(self):
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        if "kill" not in self.faults and set(self.faults) & set(QUEUE_KINDS):
            raise ValueError("queue rows are deleted while a killed cluster is down: enable 'kill'")
        if min(self.workflows, self.steps, self.kills, self.deletions, self.fanouts) < 0:
            raise ValueError("counts must not be negative")
        if self.steps < 1 or self.children < 1:
            raise ValueError("--steps and --children must be at least 1")

    @property
    def queue_faults(self) -> tuple[str, ...]:
        return tuple(kind for kind in QUEUE_KINDS if kind in self.faults)


@dataclass
class Report:
    plan: Plan
    database: str
    kills: int = 0
    deleted: dict[str, int] = field(default_factory=dict)  # workflows hit, per queue kind
    workflows: int = 0
    completed: int = 0
    lost: list[str] = field(default_factory=list)  # one line per unfinished workflow
    executions: int = 0  # step-body executions recorded
    steps: int = 0  # distinct steps that ran
    max_executions: int = 0
    max_step: str = ""
    after_completion: list[str] = field(default_factory=list)
    completed_without_execution: list[str] = field(default_factory=list)
    recovery: float | None = None  # seconds from the last fault to the last completion
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.after_completion and not self.completed_without_execution

    def lines(self) -> list[str]:
        plan = self.plan
        deleted = ", ".join(f"{kind} {self.deleted.get(kind, 0)}" for kind in plan.queue_faults)
        recovery = "-" if self.recovery is None else f"{self.recovery:.1f} s"
        lines = [
            f"database: {self.database}; {plan.workflows} workflows x {plan.steps} steps + "
            f"{plan.fanouts} fan-outs x {plan.children} children; seed {plan.seed}",
            f"faults: {self.kills} SIGKILLs of the cluster's process group; queue rows deleted "
            f"(workflows hit): {deleted or 'none'}",
            f"workflows completed: {self.completed}/{self.workflows}   lost: {len(self.lost)}",
            f"step executions: {self.executions} for {self.steps} steps; largest number of "
            f"executions of one step: {self.max_executions} ({self.max_step or '-'})",
            f"step bodies that ran after their step was recorded completed: "
            f"{len(self.after_completion)}",
            f"time from the last fault to all done: {recovery} (whole run {self.elapsed:.1f} s)",
        ]
        lines += [f"  LOST {line}" for line in self.lost]
        lines += [f"  RAN AFTER COMPLETION {line}" for line in self.after_completion]
        lines += [f"  COMPLETED, NEVER RAN {line}" for line in self.completed_without_execution]
        return lines


# -- the side table ------------------------------------------------------------------------------
def _create_table() -> None:
    from django.db import connections

    from bench.workflows import CHAOS_TABLE
    from chrono_forge import conf

    connection = connections[conf.database()]
    key = (
        "BIGSERIAL PRIMARY KEY"
        if connection.vendor == "postgresql"
        else ("INTEGER PRIMARY KEY AUTOINCREMENT")
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {CHAOS_TABLE}")
        cursor.execute(
            f"CREATE TABLE {CHAOS_TABLE} (id {key}, workflow_key VARCHAR(255) NOT NULL, "
            "step VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, started DOUBLE PRECISION NOT NULL, "
            "after_completion BOOLEAN NOT NULL)"
        )


def _drop_table() -> None:
    from django.db import connections

    from bench.workflows import CHAOS_TABLE
    from chrono_forge import conf

    with connections[conf.database()].cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {CHAOS_TABLE}")


def _executions() -> list[tuple[str, str, int, int]]:
    """``(workflow key, step, executions, executions that started after the completion)``."""
    from django.db import connections

    from bench.workflows import CHAOS_TABLE
    from chrono_forge import conf

    with connections[conf.database()].cursor() as cursor:
        cursor.execute(
            "SELECT workflow_key, step, COUNT(*), "
            "SUM(CASE WHEN after_completion THEN 1 ELSE 0 END) "
            f"FROM {CHAOS_TABLE} GROUP BY workflow_key, step ORDER BY workflow_key, step"
        )
        return [(key, step, int(n), int(after or 0)) for key, step, n, after in cursor.fetchall()]


# -- the queue -----------------------------------------------------------------------------------
def _chaos_workflows():
    from chrono_forge.models import Workflow

    return Workflow.objects.filter(key__startswith=f"{PREFIX}-")


def queue_rows() -> list[tuple[Any, str, tuple[str, str]]]:
    """The chaos workflows' OrmQ rows as ``(row, kind, (job_class, key))``.

    ``kind`` is ``first`` (a ChaosSteps workflow that never started), ``child`` (a branch child that
    never started), ``continuation`` (a pass carrying a due-time token), ``poller`` (a merge poll)
    or ``other`` (e.g. a sweep's re-delivery of a stranded workflow: never deleted)."""
    from django_q.models import OrmQ
    from django_q.signing import BadSignature, SignedPackage

    from chrono_forge import step_names
    from chrono_forge.models import ExecutionLog

    workflows = {
        (job_class, key): (started_at, parent)
        for job_class, key, started_at, parent in _chaos_workflows().values_list(
            "job_class", "key", "started_at", "parent_execution_log_id"
        )
    }
    # a merge poll names its merge log: the parent is that log's workflow
    merge_parents = {
        pk: (job_class, key)
        for pk, job_class, key in ExecutionLog.objects.filter(
            workflow__in=_chaos_workflows(),
            step_name__startswith=step_names.kind_prefix("merge"),
        ).values_list("pk", "workflow__job_class", "workflow__key")
    }
    found = []
    for row in OrmQ.objects.order_by("pk"):
        try:
            task = SignedPackage.loads(row.payload)
        except BadSignature:
            continue
        args, kwargs = tuple(task.get("args") or ()), task.get("kwargs") or {}
        target = tuple(args[:2])
        if task.get("func") == POLL_MERGE and args:  # poll_merge(merge_log_id, token)
            target = merge_parents.get(args[0], ())
        if target not in workflows:
            continue
        if task.get("func") == POLL_MERGE:
            kind = "poller"
        elif task.get("func") != RUN_WORKFLOW:
            kind = "other"
        elif workflows[target][0] is None:
            # (a fan-out parent's first delivery is left alone: the fan-out must run to be tested)
            kind = "child" if workflows[target][1] is not None else "first"
            kind = "other" if target[0].endswith(".ChaosFanout") else kind
        elif "token" in kwargs:
            kind = "continuation"
        else:
            kind = "other"
        found.append((row, kind, target))
    return found


def delete_rows(owed: dict[str, int], rng: random.Random) -> dict[str, int]:
    """Delete every queue row of the chosen kind of up to ``owed[kind]`` random workflows (all of
    a workflow's rows of that kind, so a sweep's duplicate cannot stand in for the lost one);
    returns how many workflows were hit per kind. Call it only while no cluster runs."""
    from django_q.models import OrmQ

    rows = queue_rows()
    hit: dict[str, int] = {}
    for kind, count in owed.items():
        targets = sorted({target for _, k, target in rows if k == kind})
        chosen = rng.sample(targets, min(count, len(targets)))
        pks = [row.pk for row, k, target in rows if k == kind and target in chosen]
        if pks:
            OrmQ.objects.filter(pk__in=pks).delete()
        hit[kind] = len(chosen)
    return hit


# -- the run -------------------------------------------------------------------------------------
def _kill(cluster) -> None:
    """SIGKILL the cluster's whole process group (its pid is the group id: start_new_session)."""
    try:
        os.killpg(cluster.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    cluster.process.wait()


def _sweep() -> None:
    from chrono_forge.models import Workflow

    Workflow.objects.reap_stalled()
    Workflow.objects.resume_overdue()


def _in_flight() -> bool:
    return _chaos_workflows().in_flight().exists()


def _lost_line(row) -> str:
    rows = [kind for _, kind, target in queue_rows() if target == (row.job_class, row.key)]
    steps = list(row.execution_logs.order_by("-pk").values_list("step_name", "state")[:1])
    return (
        f"{row.key}: {row.state}, started {row.started_at is not None}, next_run_at "
        f"{row.next_run_at}, locked_at {row.locked_at}, queue rows {rows or 'none'}, "
        f"last step {steps[0] if steps else '-'}"
    )


def run(
    plan: Plan, start_cluster: Callable[[], Any], *, say: Callable[[str], None] = print
) -> Report:
    """One chaos run against the configured database; ``start_cluster()`` starts a qcluster and
    returns once it runs, as an object with ``pid`` (its process group) and ``process`` (a
    ``Popen``). Every cluster it started is SIGKILLed by the time it returns."""
    from django.db import connections

    from bench.workflows import ChaosFanout, ChaosSteps
    from chrono_forge import clock, conf

    rng = random.Random(plan.seed)
    report = Report(plan, connections[conf.database()].vendor)
    began = time.monotonic()
    deadline = began + plan.timeout
    next_sweep = 0.0

    def work_for(seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Sleep, running the sweeps on their cadence; return early once ``until()`` holds."""
        nonlocal next_sweep
        end = min(time.monotonic() + seconds, deadline)
        while (now := time.monotonic()) < end:
            if now >= next_sweep:
                _sweep()
                next_sweep = now + plan.sweep_every
            if until is not None and until():
                return
            time.sleep(min(0.1, max(0.0, end - now)))

    def admit(arrivals: list[tuple[type, str, dict[str, Any]]]) -> None:
        for workflow_class, key, kwargs in arrivals:
            workflow_class.perform_later(key, **kwargs)

    kills = plan.kills if "kill" in plan.faults else 0
    steps = [
        (ChaosSteps, f"{PREFIX}-{i}", {"steps": plan.steps, "pause": plan.pause, "work": plan.work})
        for i in range(plan.workflows)
    ]
    fanouts = [
        (
            ChaosFanout,
            f"{PREFIX}-fan{i}",
            {"children": plan.children, "pause": plan.pause, "work": plan.work},
        )
        for i in range(plan.fanouts)
    ]
    # Half the workflows arrive while the first killed cluster is down, so that kill finds first
    # deliveries to lose whatever the speed of the machine.
    early, late = fanouts + steps[: len(steps) // 2], steps[len(steps) // 2 :]
    if not kills:
        early, late = fanouts + steps, []

    _create_table()
    try:
        cluster = start_cluster()
        admit(early)
        owed = dict.fromkeys(plan.queue_faults, plan.deletions)
        last_fault = None
        for _ in range(kills):
            # A kill owing queue rows of a kind comes as soon as rows of that kind exist (they can
            # be short-lived: a child's first delivery waits only for a free worker), or waits up
            # to ``settle`` seconds more for them (a poller appears only once its parent's pass
            # is done, maybe after a reap); the first kill is certain to find first deliveries
            # (the late arrivals).
            wanted = {kind for kind, count in owed.items() if count}
            wanted -= {"first"} if late else set()

            def present(wanted=wanted) -> bool:
                return bool(wanted & {kind for _, kind, _ in queue_rows()})

            work_for(rng.uniform(*plan.gap), until=present if wanted else None)
            if wanted:
                work_for(plan.settle, until=lambda: present() or not _in_flight())
            if not _in_flight() or time.monotonic() >= deadline:
                break
            _kill(cluster)
            report.kills += 1
            admit(late)
            late = []
            hit = delete_rows({kind: n for kind, n in owed.items() if n}, rng)
            for kind, count in hit.items():
                owed[kind] -= count
                report.deleted[kind] = report.deleted.get(kind, 0) + count
            last_fault = clock.now()
            say(
                f"kill {report.kills}: deleted rows of "
                f"{', '.join(f'{n} {k}' for k, n in hit.items() if n) or 'no workflow'}"
            )
            cluster = start_cluster()

        admit(late)  # (only when the kills ended before the first one)
        while _in_flight() and time.monotonic() < deadline:
            work_for(0.5)
        report.elapsed = time.monotonic() - began
        _fill(report, last_fault)
    finally:
        try:
            _kill(cluster)
        except NameError:  # start_cluster() itself failed
            pass
        _drop_table()
    return report


def _fill(report: Report, last_fault: datetime | None) -> None:
    from django.db.models import Max

    from chrono_forge.models import ExecutionLog

    workflows = _chaos_workflows()
    report.workflows = workflows.count()
    report.completed = workflows.filter(state="completed").count()
    report.lost = [_lost_line(row) for row in workflows.exclude(state="completed").order_by("pk")]
    done = workflows.filter(state="completed").aggregate(last=Max("completed_at"))["last"]
    if last_fault is not None and done is not None and not report.lost:
        report.recovery = max(0.0, (done - last_fault).total_seconds())

    ran = set()
    for key, step, count, after in _executions():
        ran.add((key, step))
        report.executions += count
        report.steps += 1
        if count > report.max_executions:
            report.max_executions, report.max_step = count, f"{key} {step}"
        if after:
            report.after_completion.append(f"{key} {step}: {after} of {count} executions")
    completed = ExecutionLog.objects.filter(
        workflow__in=workflows, step_name__startswith="durably_execute$", state="completed"
    ).values_list("workflow__key", "step_name")
    report.completed_without_execution = [
        f"{key} {step}" for key, step in completed if (key, step) not in ran
    ]


# -- the command line ----------------------------------------------------------------------------
class Cluster:
    """A ``python -m django qcluster`` subprocess in its own session (its pid is its group id)."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CHRONO_FORGE_TEST_LOG_LEVEL": "INFO"}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "qcluster"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.offset = log_path.stat().st_size

    def wait_ready(self, timeout: float = 60) -> Cluster:
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "rb") as log:
                log.seek(self.offset)
                if _RUNNING.search(log.read().decode(errors="replace")):
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"qcluster did not start; see {self.log_path}")
            time.sleep(0.1)


def _start_postgres(stack: list) -> None:
    """A durable scripts/pg cluster (a crash test needs fsync on) with an empty bench database."""
    import psycopg

    with psycopg.connect(
        start_durable(stack, prefix="chrono_forge-chaos-pg."), autocommit=True
    ) as connection:
        connection.execute("DROP DATABASE IF EXISTS chrono_forge_chaos WITH (FORCE)")
        connection.execute("CREATE DATABASE chrono_forge_chaos")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workflows", type=int, default=Plan.workflows)
    parser.add_argument("--steps", type=int, default=Plan.steps)
    parser.add_argument("--fanouts", type=int, default=Plan.fanouts)
    parser.add_argument("--children", type=int, default=Plan.children)
    parser.add_argument("--kills", type=int, default=Plan.kills)
    parser.add_argument(
        "--deletions", type=int, default=Plan.deletions, help="workflows hit per queue-row kind"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated fault kinds to inject (default all: {','.join(FAULT_KINDS)})",
    )
    parser.add_argument("--seed", type=int, default=Plan.seed)
    parser.add_argument("--timeout", type=float, default=Plan.timeout, help="seconds, whole run")
    parser.add_argument("--sweep-every", type=float, default=Plan.sweep_every)
    args = parser.parse_args(argv)
    try:
        plan = Plan(
            workflows=args.workflows,
            steps=args.steps,
            fanouts=args.fanouts,
            children=args.children,
            kills=args.kills,
            deletions=args.deletions,
            faults=tuple(kind for kind in args.faults.split(",") if kind),
            seed=args.seed,
            timeout=args.timeout,
            sweep_every=args.sweep_every,
        )
    except ValueError as error:
        parser.error(str(error))

    workdir = tempfile.mkdtemp(prefix="chrono_forge-chaos.", dir="/tmp")
    cleanup: list[Callable[[], Any]] = []
    os.environ["CHRONO_FORGE_TEST_DB"] = args.db
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    try:
        if args.db == "postgres":
            _start_postgres(cleanup)
            os.environ["CHRONO_FORGE_TEST_DB_NAME"] = "chrono_forge_chaos"
        else:
            os.environ["CHRONO_FORGE_TEST_DB_NAME"] = os.path.join(workdir, "chaos.sqlite3")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        print(f"database: {args.db} ({durability()}); logs in {workdir}", flush=True)
        log_path = Path(workdir) / "qcluster.log"
        report = run(
            plan,
            lambda: Cluster(log_path).wait_ready(),
            say=lambda line: print(line, flush=True),
        )
        print()
        print("\n".join(report.lines()))
        if report.ok:
            cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
        else:
            print(f"(the qcluster log is kept in {workdir})")
        return 0 if report.ok else 1
    finally:
        for step in reversed(cleanup):
            step()


if __name__ == "__main__":
    sys.exit(main())
