"""Fixtures and hooks for chrono_forge's own tests (no tests here)."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DB = os.environ.get("CHRONO_FORGE_TEST_DB", "sqlite")

_clusters_key = pytest.StashKey[list]()
_RUNNING = re.compile(r"Q Cluster \S+ \[[^\]]*\] running\.")


# --- markers ---------------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Mark qcluster tests `e2e`; deselect (never skip) tests that belong to the other database.

    `postgres_only` tests run in scripts/test's PostgreSQL pass, `sqlite_only` ones in its SQLite pass;
    deselected tests are reported as such, so no skip is ever counted.
    """
    other = "sqlite_only" if TEST_DB == "postgres" else "postgres_only"
    kept, deselected = [], []
    for item in items:
        if "qcluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
        (deselected if other in item.keywords else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of every qcluster log to a failed test's report."""
    report = yield
    if report.failed:
        for index, cluster in enumerate(item.stash.get(_clusters_key, [])):
            report.sections.append((f"qcluster #{index} log (tail)", cluster.log_tail()))
    return report


# --- qcluster --------------------------------------------------------------------------------


class QCluster:
    """A `python -m django qcluster` subprocess joined to the test database."""

    def __init__(self, process, log_path):
        self.process = process
        self.log_path = log_path
        self.pid = process.pid

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=80):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def is_running(self):
        return self.process.poll() is None

    def stop(self, timeout=10):
        """SIGTERM the main process only, then SIGKILL the whole group. Returns the exit code.

        A SIGTERM to the whole process group hangs qcluster's main process (children die first,
        the parent blocks in Cluster.stop), so the group only ever gets SIGKILL, as a last step
        that also reaps any worker left behind.
        """
        if self.process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # start_new_session: the group id is our pid
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.wait()


@pytest.fixture
def qcluster(transactional_db, tmp_path, request):
    """Factory: ``cluster = qcluster()`` starts a real django-q2 cluster and waits until it runs.

    The cluster uses the database this test process created (SQLite file or PostgreSQL) and
    sees only committed data, hence ``transactional_db``. It logs at INFO to a file under
    ``tmp_path`` (``cluster.log_text()``); a failed test shows the log's tail in its report.
    Every cluster is stopped at teardown; ``cluster.stop()`` stops one earlier.
    """
    from django.conf import settings
    from django.db import connection
    from django_q.tasks import async_task

    clusters = []
    request.node.stash[_clusters_key] = clusters

    def start(*, ready_timeout=30, extra_env=None):
        if connection.in_atomic_block:
            raise RuntimeError("start qcluster outside atomic(): it cannot see uncommitted rows")
        db_name = str(connection.settings_dict["NAME"])
        if connection.vendor == "sqlite" and (":memory:" in db_name or "mode=memory" in db_name):
            raise RuntimeError(f"qcluster needs a file database, not {db_name!r}")

        log_path = tmp_path / f"qcluster-{len(clusters)}.log"
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
            CHRONO_FORGE_TEST_DB=TEST_DB,
            CHRONO_FORGE_TEST_DB_NAME=db_name,
            CHRONO_FORGE_TEST_LOG_LEVEL="INFO",
            CHRONO_FORGE_TEST_QSTATS_DIR=settings.CACHES["django_q"]["LOCATION"],
            PYTHONPATH=os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "django", "qcluster"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cluster = QCluster(process, log_path)
        clusters.append(cluster)

        # Ready = this cluster logged "Q Cluster ... running." and a probe task went through the
        # real broker to a worker. The probe is not saved (no Task row) and its broker row is
        # deleted on ack, so nothing stays behind in the test database.
        probe = tmp_path / f"qcluster-{len(clusters) - 1}.ready"
        async_task(
            "tests.e2e_tasks.touch",
            str(probe),
            q_options={"save": False, "task_name": "qcluster-ready-probe"},
        )

        def ready():
            if not cluster.is_running():
                raise AssertionError(f"qcluster exited with code {process.returncode}")
            return probe.exists() and _RUNNING.search(cluster.log_text())

        try:
            wait_for(ready, ready_timeout, interval=0.1, message="the qcluster probe task")
        except AssertionError as exc:
            cluster.stop()
            where = f"{settings.Q_CLUSTER['name']} on {connection.vendor} {db_name}"
            raise AssertionError(
                f"qcluster did not become ready ({where}): {exc}\n"
                f"--- qcluster log tail ---\n{cluster.log_tail()}"
            ) from None
        return cluster

    yield start

    for cluster in clusters:
        cluster.stop()
