"""Steps per second of a 100-step workflow, and the cost of replaying completed steps.

Not a test: it prints numbers beside a raw baseline measured in the same run, as ratios.

* **steps/s**: ``perform_now`` of a workflow with 100 trivial ``durably_execute`` steps (one pass:
  admit, lock, 100 x (INSERT + UPDATE), completion), against a raw baseline doing the same writes
  with plain ORM calls and the same commit pattern (the workflow row INSERT, then per step one
  transaction holding the step's ``ExecutionLog`` INSERT and the previous step's UPDATE to
  completed).
* the same workflow as DBOS Transact would record it (``dbos_run``: per step a check transaction
  of two SELECTs before the body, the output INSERTed in its own transaction after it), with the
  same ORM calls on the same tables: the DBOS-equivalent baseline.
* **replay**: a pass over a workflow whose N steps are completed and which parks again on a gate
  step (N = 0, 10, 100). The marginal replay cost ``pass(N) - pass(0)`` is printed beside the
  N rows' share of one bulk SELECT of the workflow's step logs (``select(N) - select(0)``): the
  floor for replaying N steps from the database.

Run (from the repository root; the database is chosen like the tests' settings):

    .venv/bin/python bench/steps_per_second.py                       # SQLite file, WAL, IMMEDIATE
    eval "$(scripts/pg start /tmp/cf-bench-pg)"
    CHRONO_FORGE_TEST_DB=postgres .venv/bin/python bench/steps_per_second.py
    scripts/pg stop /tmp/cf-bench-pg

``--index-cost [NAME ...]`` measures only what the named indexes (none named: the ones the admin's
scale work added in migration 0003) cost each step write: steps/s with them and without them,
taking turns every round. The name ``dropped`` stands for the indexes migration 0011 dropped
(created again for the measurement).

A throwaway database is created (Django's test-database machinery) and destroyed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from chrono_forge import clock, dispatch  # noqa: E402
from chrono_forge.dispatch.memory import InMemoryDispatcher  # noqa: E402
from chrono_forge.models import ExecutionLog, Workflow  # noqa: E402
from tests.workflows_core import FLAGS, Steps  # noqa: E402

STEPS = 100


def interleaved(funcs: dict, rounds: int) -> dict:
    """Median seconds of each ``func(round_index)``; the functions take turns every round, so a load
    spike on this shared machine hits them alike instead of skewing one of them."""
    samples: dict = {name: [] for name in funcs}
    for index in range(rounds):
        for name, func in funcs.items():
            started = time.perf_counter()
            func(index)
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def engine_run(index: int) -> None:
    row = Steps.perform_now(f"engine-{index}", n=STEPS)
    assert row.state == "completed", row.state


def raw_run(index: int) -> None:
    """The same writes with plain ORM calls and the engine's commit pattern: each step's INSERT
    commits together with the previous step's completed UPDATE; the last UPDATE commits alone."""
    now = clock.now()
    row = Workflow.objects.create(
        job_class="bench.Raw", key=f"raw-{index}", created=now, modified=now
    )
    previous = None
    for step in range(STEPS):
        now = clock.now()
        with transaction.atomic():
            if previous is not None:
                complete(previous)
            previous = ExecutionLog.objects.create(
                workflow=row,
                step_name=f"durably_execute$step_{step}",
                state="pending",
                attempts=1,
                started_at=now,
                last_executed_at=now,
                created=now,
                modified=now,
            )
    complete(previous)


def dbos_run(index: int) -> None:
    """A DBOS-equivalent baseline of the same workflow, with plain ORM calls on the same tables:
    what DBOS Transact writes for a workflow of sequential steps. The workflow's status row is
    INSERTed at its start and UPDATEd at its end; before each step one transaction checks the run
    is not cancelled and the step has no recorded output yet (two SELECTs), and after the step its
    output is INSERTed in a transaction of its own: per step 2 SELECTs, 1 INSERT and 1 commit,
    nothing recorded before the body runs."""
    now = clock.now()
    row = Workflow.objects.create(
        job_class="bench.Dbos", key=f"dbos-{index}", state="running", created=now, modified=now
    )
    for step in range(STEPS):
        name = f"durably_execute$step_{step}"
        with transaction.atomic():
            Workflow.objects.filter(pk=row.pk).values_list("state", flat=True).first()
            ExecutionLog.objects.filter(workflow=row, step_name=name).values_list(
                "result", flat=True
            ).first()
        now = clock.now()
        ExecutionLog.objects.create(
            workflow=row,
            step_name=name,
            state="completed",
            attempts=1,
            started_at=now,
            last_executed_at=now,
            completed_at=now,
            result=None,
            created=now,
            modified=now,
        )
    Workflow.objects.filter(pk=row.pk).update(
        state="completed", completed_at=clock.now(), modified=clock.now()
    )


def complete(log: ExecutionLog) -> None:
    ExecutionLog.objects.filter(pk=log.pk).update(
        state="completed", completed_at=clock.now(), result=None, modified=clock.now()
    )


#: The indexes the admin's scale work added (migration 0003) that every step write maintains.
SCALE_INDEXES = (
    (ExecutionLog, "chrono_forge_log_step_prefix"),
    (ExecutionLog, "chrono_forge_log_state_step"),
    (Workflow, "chrono_forge_wf_next_run"),
)


def dropped_indexes() -> list:
    """The indexes migration 0011 dropped that a step write maintained, as they were: the
    automatic indexes of the step log's and the workflow's foreign keys and, on PostgreSQL, the
    step logs' id index (SQLite keeps that one)."""
    from django.db import models

    indexes = [
        (ExecutionLog, models.Index(fields=["workflow"], name="bench_dropped_log_workflow")),
        (Workflow, models.Index(fields=["parent_execution_log"], name="bench_dropped_wf_parent")),
    ]
    if connection.vendor != "sqlite":
        indexes.append((ExecutionLog, models.Index(fields=["id"], name="bench_dropped_log_id")))
    return indexes


def index_cost(rounds: int, names: list[str]) -> None:
    """(``--index-cost [NAME ...]``) steps/s with the named step-log/workflow indexes (by default
    the scale indexes of migration 0003) and without them: the per-step write cost of maintaining
    them. With and without take turns every round (the indexes are dropped and added again
    between them, cheap on this small table), so a load spike on the shared machine hits both."""
    from django.db import connection

    models = (ExecutionLog, Workflow)
    dropped = dropped_indexes() if "dropped" in names else []
    names = [name for name in names if name != "dropped"]
    indexes = [
        (model, index)
        for name in names or ([] if dropped else [name for _m, name in SCALE_INDEXES])
        for model in models
        for index in model._meta.indexes
        if index.name == name
    ]
    missing = set(names) - {index.name for _m, index in indexes}
    if missing:
        raise SystemExit(f"no such index: {', '.join(sorted(missing))}")
    if dropped:  # created again, so "with" measures what a step paid before migration 0011
        with connection.schema_editor() as editor:
            for model, idx in dropped:
                editor.add_index(model, idx)
        indexes += dropped
    samples: dict[str, list[float]] = {"with the indexes": [], "without them": []}
    for index in range(rounds):
        offset = 10_000 * (1 + index)  # new workflow keys for every pass
        for label in samples:
            # One pass first, not measured: right after a CREATE INDEX (its WAL, its checkpoint)
            # the next pass is slower, which would be charged to the indexes.
            engine_run(offset + (0 if label == "with the indexes" else 5000))
            start = time.perf_counter()
            engine_run(offset + (1 if label == "with the indexes" else 5001))
            samples[label].append(time.perf_counter() - start)
            with connection.schema_editor() as editor:
                for model, idx in indexes:
                    if label == "with the indexes":
                        editor.remove_index(model, idx)
                    else:
                        editor.add_index(model, idx)
    print(f"per-step cost of {', '.join(idx.name for _m, idx in indexes)}:")
    medians = {label: statistics.median(times) for label, times in samples.items()}
    for label, median in medians.items():
        print(f"  {label:28s} {STEPS / median:8.0f} steps/s ({median * 1000:.1f} ms per pass)")
    cost = medians["with the indexes"] / medians["without them"] - 1
    print(f"  time per step with the indexes / without: {1 + cost:.3f} ({cost:+.1%})")


def parked(n: int) -> Workflow:
    FLAGS.pop("gate_open", None)
    row = Steps.perform_now(f"replay-{n}", n=n, gate=True)
    assert row.state == "idle", row.state
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=15, help="rounds per measurement (median reported)"
    )
    parser.add_argument(
        "--index-cost",
        nargs="*",
        metavar="NAME",
        help="only measure the per-step cost of the named indexes (none named: the ones "
        "migration 0003 added; 'dropped': the ones migration 0011 dropped)",
    )
    args = parser.parse_args()

    logging.getLogger("chrono_forge").setLevel(logging.ERROR)  # the gate's expected failures
    dispatch.set_dispatcher(InMemoryDispatcher())  # no broker: measure the engine's own writes
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        where = f"{connection.vendor} {connection.settings_dict['NAME']}"
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode")
                where += f" (journal_mode={cursor.fetchone()[0]})"
        print(f"database: {where}; {args.rounds} rounds, median")

        engine_run(-1)  # warm-up (imports, statement caches)
        raw_run(-1)
        dbos_run(-1)
        if args.index_cost is not None:
            index_cost(args.rounds, args.index_cost)
            return
        timed = interleaved({"engine": engine_run, "raw": raw_run, "dbos": dbos_run}, args.rounds)
        engine, raw, dbos = timed["engine"], timed["raw"], timed["dbos"]
        print(
            f"{STEPS}-step workflow, one pass:  chrono_forge {STEPS / engine:8.0f} steps/s "
            f"({engine * 1000:.1f} ms)   raw ORM baseline {STEPS / raw:8.0f} steps/s "
            f"({raw * 1000:.1f} ms)   chrono_forge/raw {raw / engine:.2f}   "
            f"DBOS-equivalent {STEPS / dbos:8.0f} steps/s ({dbos * 1000:.1f} ms)   "
            f"chrono_forge/DBOS-equivalent {dbos / engine:.2f}"
        )

        rows = {n: parked(n) for n in (0, 10, 100)}
        funcs = {}
        for n, row in rows.items():
            funcs[("replay", n)] = lambda _i, key=row.key: Steps._execute(key)
            funcs[("bulk", n)] = lambda _i, pk=row.pk: list(
                ExecutionLog.objects.filter(workflow_id=pk)
            )
        timed = interleaved(funcs, args.rounds)
        replay = {n: timed[("replay", n)] for n in rows}
        for n in (10, 100):
            bulk = timed[("bulk", n)] - timed[("bulk", 0)]  # the rows' share of one bulk SELECT
            marginal = replay[n] - replay[0]
            print(
                f"replay of {n:3d} completed steps: pass {replay[n] * 1000:6.2f} ms "
                f"(pass with 0 steps {replay[0] * 1000:.2f} ms, "
                f"marginal {marginal * 1000:6.3f} ms, {marginal / n * 1e6:5.1f} us/step)   "
                f"bulk SELECT of {n} rows (minus an empty one) {bulk * 1000:6.3f} ms   "
                f"marginal/bulk {marginal / bulk:.2f}"
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)


if __name__ == "__main__":
    main()
