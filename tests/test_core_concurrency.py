"""Real concurrency: many workers deliver a pass of the same workflow at the same moment.

The 20-thread race is PostgreSQL only (tests/conftest.py deselects ``postgres_only`` tests on
SQLite, where there is no row lock to race for); a smaller SQLite race checks the IMMEDIATE write
lock instead.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from chrono_forge import tasks
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_core as w
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20


def backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def race(env, threads: int) -> list[object]:
    """``threads`` deliveries of the same pass, released at once by a barrier; returns their
    outcomes."""
    barrier = threading.Barrier(threads)
    outcomes: list[object] = []

    def deliver():
        try:
            barrier.wait()
            tasks.run_workflow(w.Counter.job_class(), "race")
            outcomes.append("ok")
        except BaseException as error:  # noqa: BLE001 - reported by the caller's assertion
            outcomes.append(error)
        finally:
            from django.db import connection as thread_connection

            thread_connection.close()

    workers = [threading.Thread(target=deliver) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in workers)
    return outcomes


def assert_ran_once(env, wf: Workflow) -> None:
    assert w.calls("Counter.count") == 1 and w.calls("Counter.perform") == 1
    wf.refresh_from_db()
    assert (wf.state, wf.locked_by, wf.next_run_at) == ("completed", None, None)
    assert ExecutionLog.objects.filter(workflow=wf, step_name="$workflow_completion$").count() == 1
    assert ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$count").attempts == 1
    assert env.pending == []  # no wake-up or continuation was left behind
    assert Workflow.objects.count() == 1


@pytest.mark.postgres_only
def test_simultaneous_deliveries_run_the_step_once_and_complete_once(chrono_forge_env):
    wf = w.Counter.perform_later("race")
    chrono_forge_env.drop_pending()
    before = backends()
    assert race(chrono_forge_env, THREADS) == ["ok"] * THREADS  # every duplicate exited quietly
    assert_ran_once(chrono_forge_env, wf)
    # every thread closed its connection (the server drops a backend shortly after the client
    # closes)
    wait_for(lambda: backends() <= before, timeout=10, message="the threads' connections to close")


@pytest.mark.sqlite_only
def test_simultaneous_deliveries_on_sqlite_serialise_on_the_write_lock(chrono_forge_env):
    """SQLite ignores select_for_update; BEGIN IMMEDIATE (transaction_mode) serialises the lock
    instead."""
    wf = w.Counter.perform_later("race")
    chrono_forge_env.drop_pending()
    assert race(chrono_forge_env, 8) == ["ok"] * 8
    assert_ran_once(chrono_forge_env, wf)
