"""Settings of the qcluster that the hard-kill end-to-end test starts: the test settings with a
3-second MAX_DURATION, so a pass re-enqueued by the reaper takes over the lock a killed worker
left behind within seconds instead of minutes. The test process itself keeps tests.settings."""

from tests.settings import *  # noqa: F403

CHRONO_FORGE = {**CHRONO_FORGE, "MAX_DURATION": 3, "REAP_STALE_AFTER": 3}  # noqa: F405
