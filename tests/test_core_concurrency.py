"""Real concurrency on PostgreSQL: many workers deliver a pass of the same workflow at the same moment.

PostgreSQL only (tests/conftest.py deselects ``postgres_only`` tests on SQLite, where a single
database-wide write lock serialises everything and there is no row lock to race for).
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from chrono_forge import tasks
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_core as w
from tests.helpers import wait_for
from tests.workflows_core import reset_core  # noqa: F401  (autouse)

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

THREADS = 20


def backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_simultaneous_deliveries_run_the_step_once_and_complete_once(chrono_forge_env):
    wf = w.Counter.perform_later("race")
    chrono_forge_env.drop_pending()
    before = backends()
    barrier = threading.Barrier(THREADS)
    outcomes: list[object] = []

    def deliver():
        try:
            barrier.wait()
            tasks.run_workflow(w.Counter.job_class(), "race")
            outcomes.append("ok")
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            outcomes.append(error)
        finally:
            from django.db import connection as thread_connection

            thread_connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert outcomes == ["ok"] * THREADS  # every duplicate exited quietly
    assert w.calls("Counter.count") == 1 and w.calls("Counter.perform") == 1
    wf.refresh_from_db()
    assert (wf.state, wf.locked_by, wf.next_run_at) == ("completed", None, None)
    assert ExecutionLog.objects.filter(workflow=wf, step_name="$workflow_completion$").count() == 1
    assert ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$count").attempts == 1
    assert chrono_forge_env.pending == []  # no wake-up or continuation was left behind
    assert Workflow.objects.count() == 1
    # every thread closed its connection (the server drops a backend shortly after the client closes)
    wait_for(lambda: backends() <= before, timeout=10, message="the threads' connections to close")
