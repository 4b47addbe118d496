"""Settings of the qcluster that the fan-out end-to-end test starts: the test settings plus the two
production recommendations that matter at thousands of tasks (README): persistent database
connections and bulk dequeues. Passes keep django-q2's result rows
(tests.e2e_tasks.SavingDjangoQDispatcher), so the test counts each workflow's deliveries. The test
process itself keeps tests.settings."""

from tests.settings import *  # noqa: F403

DATABASES["default"]["CONN_MAX_AGE"] = 60  # noqa: F405
Q_CLUSTER = {**Q_CLUSTER, "bulk": 5}  # noqa: F405
CHRONO_FORGE = {**CHRONO_FORGE, "DISPATCHER": "tests.e2e_tasks.SavingDjangoQDispatcher"}  # noqa: F405
