"""Settings of the chaos bench (bench/chaos.py) and of the qclusters it starts.

The test settings (the database comes from the same environment variables) with every timer short,
so a killed pass is reaped and a lost continuation resumed within seconds instead of minutes:

* a pass is killed by django-q2 after ``timeout`` (5 s), well before its lock may be stolen
  (``MAX_DURATION``, 6 s), so a slow pass never runs beside its thief;
* ``retry`` (8 s) exceeds ``timeout`` (else django-q2 re-delivers tasks that are still running);
* a lock older than 6 s is stranded and a continuation late by more than 1 s is overdue.

The cluster keeps the test settings' name, so the e2e test (whose own process runs on
tests.settings) and the clusters it starts share one queue. Connections persist, as the README
recommends for workers (with health checks).
"""

from datetime import timedelta

from tests.settings import *  # noqa: F403
from tests.settings import CHRONO_FORGE as _CHRONO_FORGE
from tests.settings import DATABASES as _DATABASES
from tests.settings import Q_CLUSTER as _Q_CLUSTER

# Copies, not in-place edits: the e2e test imports this module beside its live tests.settings.
DATABASES = {
    alias: {**db, "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}
    for alias, db in _DATABASES.items()
}

Q_CLUSTER = {**_Q_CLUSTER, "workers": 2, "timeout": 5, "retry": 8, "max_attempts": 1}

CHRONO_FORGE = {
    # the test suite's workflow modules, and the chaos workflows, register in every qcluster
    "WORKFLOW_MODULES": [*_CHRONO_FORGE["WORKFLOW_MODULES"], "bench.workflows"],
    "MAX_DURATION": timedelta(seconds=6),
    "REAP_STALE_AFTER": timedelta(seconds=6),
    "RESUME_OVERDUE_GRACE": timedelta(seconds=1),
}
