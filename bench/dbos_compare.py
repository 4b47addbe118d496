"""Steps per second of a workflow of sequential trivial steps: chrono_forge beside real DBOS
Transact, measured in the same run on the same machine and the same database server.

Not a test: it prints both rates and their ratio, chrono_forge / DBOS, per database.

* **chrono_forge**: ``Steps.perform_now(key, n=STEPS)`` (tests/workflows_core.py), one inline pass
  of ``STEPS`` trivial ``durably_execute`` steps, as bench/steps_per_second.py runs it.
* **DBOS**: a ``@DBOS.workflow()`` calling a ``@DBOS.step()`` function (it returns None) ``STEPS``
  times, called directly (it runs in the calling thread), in a worker process of its own under the
  DBOS venv's interpreter (DBOS is not one of the project's dependencies). DBOS is configured as
  its documentation says, ``DBOSConfig(name=..., system_database_url=...)``, everything else left
  at its defaults.

Durability is the same for both. PostgreSQL: one cluster started by ``bench.pg.start_durable``
(fsync, synchronous_commit and full_page_writes on), chrono_forge's tables in one database of it,
DBOS's system database in another. SQLite: files side by side in one /tmp directory, every commit
synced (``synchronous=FULL``); chrono_forge in WAL mode (bench/settings.py with
``BENCH_SQLITE_SYNCHRONOUS=FULL``), DBOS twice: as DBOS opens it (SQLite's default rollback
journal, ``synchronous=FULL``, which DBOS leaves as it is), and with the file switched to WAL
before DBOS opens it (WAL is a property of the file that DBOS keeps), chrono_forge's exact
settings. Each worker prints the settings it really runs with.

Beside them, **bare commits**: the driver alone (``sqlite3``, psycopg) committing one tiny INSERT
per step on a table of its own, on a WAL/FULL file beside the others and in the same cluster: the
floor of one durable commit per step.

The systems take turns every round, the order reversed every other round (a load spike on this
shared machine hits them alike). Reported: the median steps/s over the rounds, chrono_forge /
each other system as the median of the per-round ratios and as the ratio of the medians, and the
client process's CPU time per step (median). One more pass of each, not timed, counts its commits:

* SQLite: the COMMITs that followed a change, and the writes run in autocommit mode (each its own
  commit), seen by a trace callback on every connection the process opened (the same counter in
  both processes);
* PostgreSQL: the commit records written to the WAL over the pass (``pg_waldump``; only that
  system is running then: a durable commit each), and the ``pg_stat_database.xact_commit`` delta
  of its database (read-only transactions included).

Run (from the repository root; the DBOS venv is created on first use, ``--dbos-venv`` to choose
where, ``--dbos-version`` to pin another version):

    .venv/bin/python bench/dbos_compare.py --rounds 21          # SQLite, then PostgreSQL
    .venv/bin/python bench/dbos_compare.py --db sqlite --rounds 15 --steps 100

The DBOS venv is created as ``python3 -m venv bench/.venv-dbos`` followed by
``bench/.venv-dbos/bin/pip install dbos==3.4.0`` (git ignores it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DBOS_VERSION = "3.4.0"
DEFAULT_VENV = ROOT / "bench" / ".venv-dbos"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DBOS_DATABASE = "dbos_compare_sys"
CHRONO_FORGE_DATABASE = "chrono_forge_dbos_compare"
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
BARE = "bare commits"


# -- SQLite commits: the same counter in both processes --
class SqliteCommits:
    """Counts, on the connections given to :meth:`attach`, the commits that wrote something: a
    COMMIT after a change (``total_changes`` moved since the BEGIN) and a write run in autocommit
    mode (its own commit), from a trace callback set only while :meth:`counting`."""

    def __init__(self) -> None:
        self.connections: list[sqlite3.Connection] = []
        self.commits = 0
        self.empty_commits = 0  # COMMITs of a transaction that changed nothing (no sync)
        self.statements = 0
        self._state: dict[int, dict] = {}

    def attach(self, connection: sqlite3.Connection) -> None:
        self.connections.append(connection)

    def patch_connect(self) -> None:
        """Attach every connection this process opens from now on (DBOS's pool opens its own)."""
        original = sqlite3.dbapi2.connect

        def connect(*args, **kwargs):
            connection = original(*args, **kwargs)
            self.attach(connection)
            return connection

        sqlite3.connect = sqlite3.dbapi2.connect = connect

    def take(self) -> dict:
        return {
            "commits": self.commits,
            "empty_commits": self.empty_commits,
            "statements": self.statements,
        }

    def counting(self, on: bool) -> None:
        for connection in self.connections:
            try:
                if on:
                    self._state[id(connection)] = {"begin": None, "pending": None}
                    connection.set_trace_callback(self._tracer(connection))
                else:
                    connection.set_trace_callback(None)
                    self._settle(connection, connection.total_changes)
            except sqlite3.ProgrammingError:  # closed since
                continue

    def _settle(self, connection: sqlite3.Connection, changes: int) -> None:
        state = self._state.get(id(connection))
        if state and state["pending"] is not None:
            if changes != state["pending"]:
                self.commits += 1
            state["pending"] = None

    def _tracer(self, connection: sqlite3.Connection):
        state = self._state[id(connection)]

        def trace(sql: str) -> None:
            changes = connection.total_changes
            self._settle(connection, changes)  # the previous statement, if it autocommitted
            word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if word.startswith("--"):  # a trigger's statement, part of its parent's
                return
            self.statements += 1
            if word == "BEGIN":
                state["begin"] = changes
            elif word in ("COMMIT", "END"):
                if state["begin"] is not None and changes != state["begin"]:
                    self.commits += 1
                else:
                    self.empty_commits += 1
                state["begin"] = None
            elif word == "ROLLBACK":
                state["begin"] = None
            elif word in WRITES and state["begin"] is None and not connection.in_transaction:
                state["pending"] = changes

        return trace


# -- the DBOS worker (runs under the DBOS venv's interpreter, without Django) --
def dbos_worker(url: str, steps: int) -> None:
    """Serve ``run``/``count``/``quit`` lines on stdin, one JSON line each on the real stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # DBOS's own output goes to stderr, never into the protocol
    counter = SqliteCommits()
    if url.startswith("sqlite"):
        counter.patch_connect()
    import importlib.metadata  # the worker's imports: only under the DBOS venv

    from dbos import DBOS, DBOSConfig

    dbos = DBOS(config=DBOSConfig(name="chrono-forge-dbos-compare", system_database_url=url))

    @DBOS.step()
    def noop() -> None:
        return None

    @DBOS.workflow()
    def sequential(n: int) -> int:
        for _ in range(n):
            noop()
        return n

    DBOS.launch()
    engine = dbos._sys_db.engine
    with engine.connect() as connection:
        if url.startswith("sqlite"):
            settings = {
                "journal_mode": connection.exec_driver_sql("PRAGMA journal_mode").scalar(),
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                    connection.exec_driver_sql("PRAGMA synchronous").scalar()
                ],
            }
        else:
            settings = {
                name: connection.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            }
    sequential(steps)  # warm-up (statement caches, the pool's connections)
    out.write(
        json.dumps(
            {"ready": importlib.metadata.version("dbos"), "settings": settings, "pid": os.getpid()}
        )
        + "\n"
    )
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        if command[0] == "dispose":
            engine.dispose()  # the pool's backends exit, flushing their statistics
            out.write("{}\n")
            continue
        if command[0] == "count" and url.startswith("sqlite"):
            counter.commits = counter.empty_commits = counter.statements = 0
            counter.counting(True)
        started, cpu = time.perf_counter(), time.process_time()
        assert sequential(steps) == steps
        elapsed = time.perf_counter() - started
        reply: dict = {"seconds": elapsed, "cpu": time.process_time() - cpu}
        if command[0] == "count":
            if url.startswith("sqlite"):
                counter.counting(False)
                reply.update(counter.take())
            else:
                engine.dispose()  # its backends exit, flushing their statistics
        out.write(json.dumps(reply) + "\n")
    DBOS.destroy()


class Worker:
    def __init__(self, python: Path, url: str, steps: int, log: Path) -> None:
        self.log = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--dbos-worker", url, str(steps)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
        )
        self.hello = self._read()
        self.version = self.hello["ready"]
        self.settings = self.hello["settings"]

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise SystemExit(
                f"the DBOS worker died; its output:\n{Path(self.log.name).read_text()}"
            )
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def ensure_venv(path: Path, version: str) -> Path:
    """The DBOS venv's interpreter, with ``dbos==version`` installed (made once)."""
    python = path / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('dbos'))"
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    print(f"creating the DBOS venv in {path} (dbos=={version})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"dbos=={version}",
        ],
        check=True,
    )
    return python


# -- one database, in a process of its own (Django is set up once per process) --
def pg_admin(dbname: str = "postgres"):
    import psycopg  # the project venv's driver (this runs only there)

    return psycopg.connect(
        host=os.environ["CHRONO_FORGE_PG_HOST"],
        port=os.environ["CHRONO_FORGE_PG_PORT"],
        user=os.environ["CHRONO_FORGE_PG_USER"],
        password=os.environ.get("CHRONO_FORGE_PG_PASSWORD", ""),
        dbname=dbname,
        autocommit=True,
    )


class BareCommits:
    """The floor of one durable commit per step: the database driver alone, one tiny INSERT per
    step committed on its own, on a table of its own (SQLite: a file beside the others, WAL and
    FULL like chrono_forge's; PostgreSQL: in chrono_forge's database, autocommit)."""

    def __init__(self, db: str, path: Path) -> None:
        self.db, self.path = db, path
        self.connection = None

    def connect(self):
        if self.connection is None:
            if self.db == "sqlite":
                self.connection = sqlite3.connect(self.path, isolation_level=None)
                self.connection.execute("PRAGMA journal_mode=WAL")
                self.connection.execute("PRAGMA synchronous=FULL")
                key = "INTEGER"
            else:
                self.connection = pg_admin(CHRONO_FORGE_DATABASE)
                key = "BIGSERIAL"
            self.connection.execute(
                f"CREATE TABLE IF NOT EXISTS bench_bare (id {key} PRIMARY KEY, v TEXT)"
            )
        return self.connection

    def settings(self) -> str:
        connection = self.connect()
        if self.db == "sqlite":
            journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
            synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
            return (
                f"journal_mode={journal}, synchronous={ {2: 'FULL'}.get(synchronous, synchronous) }"
            )
        return ", ".join(
            f"{name}={connection.execute(f'SHOW {name}').fetchone()[0]}"
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        )

    def __call__(self, steps: int) -> dict:
        connection = self.connect()
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            if self.db == "sqlite":
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("INSERT INTO bench_bare (v) VALUES ('x')")
                connection.execute("COMMIT")
            else:
                connection.execute("INSERT INTO bench_bare (v) VALUES ('x')")
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class PgCommits:
    """Commit records in the WAL and the ``xact_commit`` delta of one database, over a pass."""

    def __init__(self, database: str) -> None:
        self.database = database
        with pg_admin() as connection:
            self.wal = connection.execute("SHOW data_directory").fetchone()[0] + "/pg_wal"

    def _read(self) -> tuple[str, int]:
        with pg_admin() as connection:
            lsn = connection.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            xacts = connection.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [self.database]
            ).fetchone()[0]
        return str(lsn), xacts

    def start(self) -> None:
        time.sleep(1.0)  # the closed backends have exited, their statistics flushed
        self.begin = self._read()

    def stop(self) -> dict:
        time.sleep(1.0)
        end = self._read()
        dump = subprocess.run(
            [str(PG_BIN / "pg_waldump"), "-p", self.wal, "-s", self.begin[0], "-e", end[0]],
            capture_output=True,
            text=True,
        )
        records = len(re.findall(r"desc: COMMIT", dump.stdout))
        return {"wal_commits": records, "xact_commit": end[1] - self.begin[1]}


def run_database(db: str, args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="chrono_forge-dbos-compare.", dir="/tmp"))
    os.environ["CHRONO_FORGE_TEST_DB"] = db
    os.environ["BENCH_SQLITE_SYNCHRONOUS"] = "FULL"
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    python = Path(args.dbos_python)
    urls: dict[str, str] = {}
    if db == "postgres":
        with pg_admin() as connection:
            for name in (CHRONO_FORGE_DATABASE, DBOS_DATABASE):
                connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                connection.execute(f"CREATE DATABASE {name}")
        os.environ["CHRONO_FORGE_PG_NAME"] = os.environ["CHRONO_FORGE_TEST_DB_NAME"] = (
            CHRONO_FORGE_DATABASE
        )
        env = os.environ
        urls["DBOS"] = (
            f"postgresql://{env['CHRONO_FORGE_PG_USER']}:{env['CHRONO_FORGE_PG_PASSWORD']}"
            f"@{env['CHRONO_FORGE_PG_HOST']}:{env['CHRONO_FORGE_PG_PORT']}/{DBOS_DATABASE}"
        )
    else:
        os.environ["CHRONO_FORGE_TEST_DB_NAME"] = str(workdir / "chrono_forge.sqlite3")
        urls["DBOS"] = f"sqlite:///{workdir / 'dbos.sqlite3'}"
        wal = workdir / "dbos-wal.sqlite3"
        with sqlite3.connect(wal) as connection:  # WAL stays with the file: DBOS opens it so
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
        urls["DBOS, WAL"] = f"sqlite:///{wal}"

    import django  # set up here: the database is chosen by the environment set above

    django.setup()
    import logging

    from django.core.management import call_command
    from django.db import connection

    from bench.pg import durability
    from chrono_forge import dispatch
    from chrono_forge.dispatch.memory import InMemoryDispatcher
    from tests.workflows_core import Steps

    logging.getLogger("chrono_forge").setLevel(logging.ERROR)
    dispatch.set_dispatcher(InMemoryDispatcher())  # no broker: perform_now runs the pass inline
    call_command("migrate", verbosity=0)
    say = lambda line: print(f"[{db}] {line}", file=sys.stderr, flush=True)  # noqa: E731

    def chrono_forge(key: str) -> dict:
        started, cpu = time.perf_counter(), time.process_time()
        row = Steps.perform_now(key, n=args.steps)
        elapsed = time.perf_counter() - started
        assert row.state == "completed", row.state
        return {"seconds": elapsed, "cpu": time.process_time() - cpu}

    result: dict = {"db": db, "chrono_forge_settings": durability(), "systems": {}}
    bare = BareCommits(db, workdir / "bare.sqlite3")
    workers: dict[str, Worker] = {}
    try:
        for label, url in urls.items():
            slug = label.lower().replace(", ", "-")
            workers[label] = Worker(python, url, args.steps, workdir / f"{slug}.log")
            say(f"{label} {workers[label].version}: {workers[label].settings}")
        say(f"chrono_forge: {result['chrono_forge_settings']}")
        result["dbos_version"] = next(iter(workers.values())).version
        settings = {"chrono_forge": result["chrono_forge_settings"], BARE: bare.settings()}
        for label, worker in workers.items():
            settings[label] = ", ".join(f"{k}={v}" for k, v in worker.settings.items())
        chrono_forge("warm-up")
        bare(args.steps)
        passes: dict[str, list[dict]] = {label: [] for label in settings}
        for index in range(args.rounds):
            order = list(settings)
            if index % 2:
                order.reverse()
            for label in order:
                if label == "chrono_forge":
                    passes[label].append(chrono_forge(f"round-{index}"))
                elif label == BARE:
                    passes[label].append(bare(args.steps))
                else:
                    passes[label].append(workers[label].ask("run"))
            say(
                f"round {index + 1}: "
                + ", ".join(
                    f"{label} {args.steps / p[-1]['seconds']:.0f}" for label, p in passes.items()
                )
                + " steps/s"
            )

        counts: dict[str, dict] = {}
        if db == "sqlite":
            counter = SqliteCommits()
            connection.ensure_connection()
            counter.attach(connection.connection)
            counter.counting(True)
            chrono_forge("count")
            counter.counting(False)
            counts["chrono_forge"] = counter.take()
            counter = SqliteCommits()
            counter.attach(bare.connect())
            counter.counting(True)
            bare(args.steps)
            counter.counting(False)
            counts[BARE] = counter.take()
            for label, worker in workers.items():
                counts[label] = worker.ask("count")
        else:
            for label in settings:
                database = DBOS_DATABASE if label in workers else CHRONO_FORGE_DATABASE
                pg = PgCommits(database)
                connection.close()  # every backend of the database exits first, its
                bare.close()  # statistics flushed before the first reading
                for worker in workers.values():
                    worker.ask("dispose")
                pg.start()
                if label == "chrono_forge":
                    chrono_forge("count")
                    connection.close()  # its backend exits, flushing its statistics
                elif label == BARE:
                    bare(args.steps)
                    bare.close()
                else:
                    workers[label].ask("count")
                counts[label] = pg.stop()
        cf_times = [one["seconds"] for one in passes["chrono_forge"]]
        for label, done in passes.items():
            times = [one["seconds"] for one in done]
            median = statistics.median(times)
            result["systems"][label] = {
                "steps_per_second": args.steps / median,
                # chrono_forge / this system within each round (they ran back to back), median:
                # steadier than the ratio of the medians when the load changes between rounds
                "paired_ratio": statistics.median(
                    [t / c for t, c in zip(times, cf_times, strict=True)]
                ),
                "median_ms": median * 1000,
                # the client process's CPU time per step (its background threads included)
                "cpu_us_per_step": statistics.median(one["cpu"] for one in done) / args.steps * 1e6,
                "settings": settings[label],
                **{
                    key: value / args.steps
                    for key, value in counts[label].items()
                    if key not in ("seconds", "cpu")
                },
            }
    finally:
        for worker in workers.values():
            worker.stop()
        bare.close()
        connection.close()
        if db == "postgres":
            with pg_admin() as admin:
                for name in (CHRONO_FORGE_DATABASE, DBOS_DATABASE):
                    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def report(runs: list[dict], args) -> None:
    """A Markdown table: steps/s (median of the rounds), chrono_forge / this system (median of the
    per-round ratios, then the ratio of the medians), and the commits counted per step."""
    print(
        f"\n{args.steps} sequential trivial steps per workflow, {args.rounds} rounds; "
        f"DBOS Transact {runs[0]['dbos_version']}\n"
    )
    print(
        "| database | system | durability | steps/s | chrono_forge / this (per round; medians) "
        "| client CPU / step | durable commits / step | statements or transactions / step |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for run in runs:
        systems = run["systems"]
        cf = systems["chrono_forge"]["steps_per_second"]
        for label, figures in systems.items():
            if run["db"] == "sqlite":
                commits = f"{figures['commits']:.2f}"
                other = f"{figures['statements']:.1f} statements"
            else:
                commits = f"{figures['wal_commits']:.2f}"
                other = f"{figures['xact_commit']:.2f} transactions"
            ratio = (
                "1"
                if label == "chrono_forge"
                else f"{figures['paired_ratio']:.2f}; {cf / figures['steps_per_second']:.2f}"
            )
            print(
                f"| {run['db']} | {label} | {figures['settings']} | "
                f"{figures['steps_per_second']:.0f} | {ratio} | "
                f"{figures['cpu_us_per_step']:.0f} us | {commits} | {other} |"
            )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--dbos-worker":
        dbos_worker(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (median reported)")
    parser.add_argument("--steps", type=int, default=100, help="steps per workflow")
    parser.add_argument("--dbos-venv", default=str(DEFAULT_VENV), help="where DBOS is installed")
    parser.add_argument("--dbos-version", default=DBOS_VERSION)
    parser.add_argument("--run-database", help=argparse.SUPPRESS)
    parser.add_argument("--dbos-python", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.run_database:
        print(json.dumps(run_database(args.run_database, args)))
        return

    python = ensure_venv(Path(args.dbos_venv), args.dbos_version)
    from bench.pg import start_durable  # after sys.path has the repository

    databases = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    cleanup: list = []
    runs = []
    try:
        if "postgres" in databases:
            start_durable(cleanup, prefix="chrono_forge-dbos-compare-pg.")
        for db in databases:
            command = [sys.executable, str(Path(__file__).resolve()), "--run-database", db]
            command += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
            command += ["--dbos-python", str(python)]
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
