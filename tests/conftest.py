"""Fixtures and hooks for chrono_forge's own tests (no tests here)."""

import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import clear_per_test_state, log_in_operator
from tests.helpers import wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DB = os.environ.get("CHRONO_FORGE_TEST_DB", "sqlite")

_clusters_key = pytest.StashKey[list]()
_RUNNING = re.compile(r"Q Cluster \S+ \[[^\]]*\] running\.")


# --- markers ---------------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Mark qcluster tests `e2e`; deselect (never skip) tests that belong to the other database.

    `postgres_only` tests run in scripts/test's PostgreSQL pass, `sqlite_only` ones in its SQLite
    pass; deselected tests are reported as such, so no skip is ever counted.
    """
    other = "sqlite_only" if TEST_DB == "postgres" else "postgres_only"
    kept, deselected = [], []
    for item in items:
        if {"qcluster", "db_worker"}.intersection(getattr(item, "fixturenames", ())):
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


def _spawn_manage_py(args, log_path, extra_env=None):
    """Start ``python -m django ARGS`` on this test process's database (committed data only),
    logging at INFO to ``log_path``, in its own session (so its whole group can be killed)."""
    from django.conf import settings
    from django.db import connection

    if connection.in_atomic_block:
        raise RuntimeError(f"start {args[0]} outside atomic(): it cannot see uncommitted rows")
    db_name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite" and (":memory:" in db_name or "mode=memory" in db_name):
        raise RuntimeError(f"{args[0]} needs a file database, not {db_name!r}")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        CHRONO_FORGE_TEST_DB=TEST_DB,
        CHRONO_FORGE_TEST_DB_NAME=db_name,
        CHRONO_FORGE_TEST_LOG_LEVEL="INFO",
        CHRONO_FORGE_TEST_QSTATS_DIR=settings.CACHES["django_q"]["LOCATION"],
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "django", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


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

    clusters = request.node.stash.setdefault(_clusters_key, [])

    def start(*, ready_timeout=30, extra_env=None):
        log_path = tmp_path / f"qcluster-{len(clusters)}.log"
        process = _spawn_manage_py(["qcluster"], log_path, extra_env)
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
            db_name = connection.settings_dict["NAME"]
            where = f"{settings.Q_CLUSTER['name']} on {connection.vendor} {db_name}"
            raise AssertionError(
                f"qcluster did not become ready ({where}): {exc}\n"
                f"--- qcluster log tail ---\n{cluster.log_tail()}"
            ) from None
        return cluster

    yield start

    for cluster in clusters:
        cluster.stop()


# --- Redis -----------------------------------------------------------------------------------


class RedisServer:
    """The throwaway redis-server of scripts/test (``CHRONO_FORGE_REDIS_*``)."""

    settings_module = "tests.settings_redis"

    def __init__(self, host, port, directory):
        import redis

        self.host, self.port, self.directory = host, port, directory
        self.client = redis.Redis(host=host, port=port, db=0, socket_timeout=5)

    def queued(self, list_key):
        """How many tasks wait in django-q2's Redis list ``list_key``."""
        return self.client.llen(f"django_q:{list_key}:q")

    def restart(self):
        """Stop and start the server on the same port: everything it held is lost."""
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "redis"), "restart", self.directory],
            check=True,
            capture_output=True,
        )
        self.client.ping()


@pytest.fixture
def redis_broker(monkeypatch):
    """Switch this test process's django-q2 to the Redis broker; the server must be up.

    Never skips: without the server scripts/test starts (or if it does not answer), the test fails
    with what to do. Start qclusters with ``extra_env={"DJANGO_SETTINGS_MODULE":
    server.settings_module}`` so they consume the same Redis list.
    """
    from django_q.conf import Conf

    host = os.environ.get("CHRONO_FORGE_REDIS_HOST")
    port = os.environ.get("CHRONO_FORGE_REDIS_PORT")
    directory = os.environ.get("CHRONO_FORGE_REDIS_DIR")
    if not (host and port and directory):
        pytest.fail(
            "no Redis server for the Redis broker tests: run them through scripts/test (it starts "
            "one with scripts/redis and exports CHRONO_FORGE_REDIS_HOST/_PORT/_DIR)"
        )
    server = RedisServer(host, int(port), directory)
    try:
        server.client.ping()
    except Exception as exc:
        pytest.fail(f"the Redis server at {host}:{port} does not answer: {exc!r}")
    server.client.flushdb()
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", {"host": host, "port": int(port), "db": 0})
    yield server
    server.client.flushdb()


# --- a side table for the engine tests -------------------------------------------------------


@pytest.fixture
def runs_table(transactional_db):
    """Create ``tests.workflows_engines``' side table for one test (raw SQL, outside Django's
    models, so worker processes can write it and it is dropped after)."""
    from django.db import connections

    from chrono_forge import conf
    from tests.workflows_engines import TABLE

    connection = connections[conf.database()]
    serial = "BIGSERIAL" if connection.vendor == "postgresql" else "INTEGER"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(
            f"CREATE TABLE {TABLE} (id {serial} PRIMARY KEY, workflow_key VARCHAR(255) NOT NULL, "
            "step VARCHAR(64) NOT NULL, machine VARCHAR(64) NOT NULL, pid INTEGER NOT NULL)"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


# --- Django Tasks: django-tasks-db's db_worker -------------------------------------------------


@pytest.fixture
def db_worker(transactional_db, tmp_path, request):
    """Factory: ``worker = db_worker()`` starts django-tasks-db's real ``db_worker`` process on
    the test database, with chrono_forge's Django Tasks dispatcher (tests.settings_django_tasks),
    and waits until it polls. Stopped at teardown like a qcluster (a SIGTERM, then SIGKILL)."""
    from django.db import connection

    workers = request.node.stash.setdefault(_clusters_key, [])
    running = re.compile(r"Starting worker worker_id=")

    def start(*, interval=0.1, ready_timeout=30, extra_env=None):
        log_path = tmp_path / f"db_worker-{len(workers)}.log"
        env = {"DJANGO_SETTINGS_MODULE": "tests.settings_django_tasks", **(extra_env or {})}
        args = ["db_worker", "--queue-name", "*", "--interval", str(interval), "--no-reload"]
        process = _spawn_manage_py([*args, "--no-startup-delay"], log_path, env)
        worker = QCluster(process, log_path)
        workers.append(worker)

        def ready():
            if not worker.is_running():
                raise AssertionError(f"db_worker exited with code {process.returncode}")
            return running.search(worker.log_text())

        try:
            wait_for(ready, ready_timeout, interval=0.1, message="db_worker to start")
        except AssertionError as exc:
            worker.stop()
            raise AssertionError(
                f"db_worker did not start ({connection.vendor}): {exc}\n"
                f"--- db_worker log tail ---\n{worker.log_tail()}"
            ) from None
        return worker

    yield start

    for worker in workers:
        worker.stop()


@pytest.fixture
def django_tasks_dispatcher(settings):
    """Select chrono_forge's Django Tasks dispatcher in this test process (as
    tests.settings_django_tasks does in a db_worker)."""
    from tests import settings_django_tasks

    settings.CHRONO_FORGE = dict(settings_django_tasks.CHRONO_FORGE)
    from chrono_forge.dispatch import get_dispatcher

    return get_dispatcher()


@pytest.fixture(autouse=True)
def _fresh_per_test_state():
    """Every counter, switch and record the workflow modules made with ``tests.factories.per_test``
    is empty when a test starts and when it ends."""
    clear_per_test_state()
    yield
    clear_per_test_state()


@pytest.fixture(autouse=True)
def _fresh_default_cache():
    """Each test starts with an empty default cache: the admin Overview caches its counts for 5 s,
    and a value cached by an earlier test's database would leak into the next test's page."""
    from django.core.cache import cache

    cache.clear()
    yield


# --- admin users -----------------------------------------------------------------------------


@pytest.fixture
def login_as(client):
    """``login_as("retry_workflow", ...)`` logs the test client in as a new staff user holding
    ``view_workflow`` plus exactly these permission codenames (``view=False`` leaves out
    ``view_workflow``), and returns the user."""
    from django.contrib.auth.models import Permission, User

    logins = itertools.count(1)

    def login(*codenames, view=True):
        # a new user per call: a test may log in twice with different permissions
        user = User.objects.create_user(f"operator{next(logins)}", password="pw", is_staff=True)
        wanted = ["view_workflow", *codenames] if view else list(codenames)
        user.user_permissions.add(*Permission.objects.filter(codename__in=wanted))
        client.force_login(user)
        return user

    return login


@pytest.fixture
def operator(client):
    """The test client logged in as a superuser (every admin permission)."""
    return log_in_operator(client)
