"""Settings of the benchmarks that run a real qcluster (bench/fanout.py, bench/throughput.py): the
test settings, tuned as the README recommends for production (persistent connections), with 2
qcluster workers. The database comes from ``CHRONO_FORGE_TEST_DB`` (PostgreSQL unless told).

Environment knobs (each bench sets the ones it needs, for its own process and its cluster):

* ``BENCH_WORKERS``, ``BENCH_BULK``, ``BENCH_QUEUE_LIMIT``, ``BENCH_SAVE_LIMIT``: django-q2's
  ``workers``, ``bulk``, ``queue_limit`` and ``save_limit``;
* ``BENCH_SQLITE_SYNCHRONOUS``: SQLite's ``PRAGMA synchronous`` (WAL mode; default NORMAL, the
  README's recipe; FULL syncs every commit);
* ``BENCH_SQL_COUNTS``: a directory; every process counts its statements and commits there
  (bench/sqlcount.py), for a counting run.
"""

import os

os.environ.setdefault("CHRONO_FORGE_TEST_DB", "postgres")

from tests.settings import *  # noqa: E402,F403

DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("BENCH_CONN_MAX_AGE", "60"))  # noqa: F405
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["OPTIONS"]["init_command"] = (  # noqa: F405
        "PRAGMA journal_mode=WAL;PRAGMA synchronous="
        + os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "NORMAL")
    )
Q_CLUSTER = {
    **Q_CLUSTER,  # noqa: F405
    "name": "chrono_forge_bench",
    "workers": int(os.environ.get("BENCH_WORKERS", "2")),
    "bulk": int(os.environ.get("BENCH_BULK", "5")),  # tasks per broker dequeue (both runs)
    # default: no Task rows, neither run pays the monitor's result bookkeeping
    "save_limit": int(os.environ.get("BENCH_SAVE_LIMIT", "-1")),
    "timeout": 300,
    "retry": 600,
}
if os.environ.get("BENCH_QUEUE_LIMIT"):
    Q_CLUSTER["queue_limit"] = int(os.environ["BENCH_QUEUE_LIMIT"])
CHRONO_FORGE = {
    **CHRONO_FORGE,  # noqa: F405
    "WORKFLOW_MODULES": [*CHRONO_FORGE["WORKFLOW_MODULES"], "bench.workflows"],  # noqa: F405
}

if os.environ.get("BENCH_SQL_COUNTS"):
    from bench import sqlcount  # noqa: E402

    sqlcount.install(os.environ["BENCH_SQL_COUNTS"])
