"""Tests of the test harness itself: settings, migrations, the database matrix, a real qcluster."""

import os

import pytest
from django.core.management import call_command
from django.db import connection
from django_q.tasks import async_task

from tests.helpers import wait_for


@pytest.mark.django_db(databases="__all__")  # Django 6 model checks inspect every database
def test_system_checks_pass():
    call_command("check")


@pytest.mark.django_db
def test_migrations_are_complete():
    # Raises SystemExit (exit code 1) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_database_matches_requested_backend():
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}[
        os.environ.get("CHRONO_FORGE_TEST_DB", "sqlite")
    ]
    assert connection.vendor == expected
    if expected == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version_num")
            assert int(cursor.fetchone()[0]) >= 150000


@pytest.mark.django_db
@pytest.mark.sqlite_only
def test_sqlite_test_database_is_a_wal_file_with_immediate_transactions():
    # A qcluster subprocess must be able to open the test database, and writers must queue
    # (BEGIN IMMEDIATE) instead of failing with "database is locked".
    name = str(connection.settings_dict["NAME"])
    assert os.path.isfile(name), name
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 20000


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)  # no test-wide atomic(): autocommit, as in production
def test_postgres_select_for_update_needs_a_transaction():
    # The reason the suite runs on PostgreSQL too: SQLite silently ignores this mistake.
    from django.contrib.auth.models import User
    from django.db.transaction import TransactionManagementError

    with pytest.raises(TransactionManagementError):
        list(User.objects.select_for_update())


@pytest.mark.e2e
def test_real_qcluster_runs_an_enqueued_task(qcluster, tmp_path):
    cluster = qcluster()
    target = tmp_path / "touched.txt"

    task_id = async_task("tests.e2e_tasks.touch", str(target), "hello from qcluster")

    wait_for(target.exists, timeout=30, message=f"task {task_id} to write {target}")
    assert target.read_text() == "hello from qcluster"

    # The worker saved its result into the very database this test process created.
    from django_q.models import Task

    task = wait_for(lambda: Task.objects.filter(id=task_id).first(), timeout=10)
    assert task.success, task.result
    assert task.result == str(target)

    assert cluster.stop() == 0
    assert "has stopped" in cluster.log_text()
