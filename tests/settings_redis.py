"""Settings of a qcluster on django-q2's Redis broker: the test settings with the ORM broker
replaced by the throwaway Redis server that scripts/test starts (``CHRONO_FORGE_REDIS_*``).
The test process itself keeps tests.settings and switches to Redis with the ``redis_broker``
fixture."""

import os

from tests.settings import *  # noqa: F403

REDIS = {
    "host": os.environ.get("CHRONO_FORGE_REDIS_HOST", "127.0.0.1"),
    "port": int(os.environ.get("CHRONO_FORGE_REDIS_PORT", "6379")),
    "db": 0,
}
Q_CLUSTER = {k: v for k, v in Q_CLUSTER.items() if k != "orm"} | {"redis": REDIS}  # noqa: F405
