"""Settings of the qcluster that the hard-kill and timeout end-to-end tests start: the test
settings with a 3-second MAX_DURATION, so a pass re-enqueued by the reaper takes over the lock a
killed worker left behind within seconds instead of minutes, and a 2-second task timeout for the
continuations it enqueues. The test process itself keeps tests.settings."""

from tests.settings import *  # noqa: F403

CHRONO_FORGE = {  # noqa: F405
    **CHRONO_FORGE,  # noqa: F405
    "MAX_DURATION": 3,
    "REAP_STALE_AFTER": 3,
    "TASK_TIMEOUT": 2,
}
