"""Settings of the fan-out benchmark: the test settings on PostgreSQL, tuned as the README
recommends for production (persistent connections), with 2 qcluster workers."""

import os

os.environ.setdefault("CHRONO_FORGE_TEST_DB", "postgres")

from tests.settings import *  # noqa: E402,F403

DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("BENCH_CONN_MAX_AGE", "60"))  # noqa: F405
Q_CLUSTER = {
    **Q_CLUSTER,  # noqa: F405
    "name": "chrono_forge_bench",
    "workers": int(os.environ.get("BENCH_WORKERS", "2")),
    "bulk": int(os.environ.get("BENCH_BULK", "5")),  # tasks per broker dequeue (both runs)
    "save_limit": -1,  # no Task rows: neither run pays the monitor's result bookkeeping
    "timeout": 300,
    "retry": 600,
}
CHRONO_FORGE = {
    **CHRONO_FORGE,  # noqa: F405
    "WORKFLOW_MODULES": [*CHRONO_FORGE["WORKFLOW_MODULES"], "bench.workflows"],  # noqa: F405
}
