"""Worker liveness: ``manage.py chrono_forge status`` (output and exit status, with and without a
real qcluster) and the admin Overview's Workers section and banner, both from
``health.snapshot()``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.cache import cache, caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from chrono_forge import clock, health
from chrono_forge.models import Workflow
from tests import workflows_core as w
from tests.helpers import wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_STEP = w.OneStep.job_class()


@pytest.fixture(autouse=True)
def no_cluster_stats():
    """Cluster stats expire 3 s after a cluster stops: start every test from none."""
    caches["django_q"].clear()
    cache.clear()  # the Overview caches its data for a few seconds
    yield


def status() -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("chrono_forge", "status", stdout=out)
    except CommandError as error:
        return out.getvalue(), error
    return out.getvalue(), None


def fleet():
    now = clock.now()
    long_ago = now - timedelta(hours=1)
    Workflow.objects.create(job_class=ONE_STEP, key="overdue", next_run_at=long_ago)
    Workflow.objects.create(job_class=ONE_STEP, key="due-now", next_run_at=now)
    Workflow.objects.create(job_class=ONE_STEP, key="later", next_run_at=now + timedelta(hours=1))
    Workflow.objects.create(
        job_class=ONE_STEP, key="parked", started_at=now, parked_on="gate", parked_since=now
    )
    Workflow.objects.create(
        job_class=ONE_STEP, key="stranded", state="running", locked_by="x", locked_at=long_ago
    )
    Workflow.objects.create(
        job_class=ONE_STEP, key="running", state="running", locked_by="y", locked_at=now
    )
    Workflow.objects.create(job_class=ONE_STEP, key="stalled", state="stalled")
    Workflow.objects.create(job_class=ONE_STEP, key="failed", state="failed")
    Workflow.objects.create(job_class=ONE_STEP, key="done", state="completed")
    return long_ago


@pytest.mark.django_db
def test_the_snapshot_counts_each_state_once(chrono_forge_env):
    long_ago = fleet()
    report = health.snapshot()
    assert report.counts == {
        "running": 2,
        "stranded": 1,
        "overdue": 1,
        "parked": 1,
        "blocked": 2,
    }
    assert report.oldest_due == long_ago
    assert report.clusters == [] and report.alive == 0 and report.clusters_note == ""
    assert report.queue_depth == 0
    assert report.unhealthy


@pytest.mark.django_db
def test_status_exits_1_when_work_is_overdue_and_no_cluster_is_alive(chrono_forge_env):
    fleet()
    output, error = status()
    assert error is not None  # CommandError: exit status 1
    assert "1 overdue workflow(s) and no live cluster" in str(error)
    assert "Clusters: 0 alive of 0 seen" in output
    assert "Queue: 0 task(s) ready to run" in output
    assert "Oldest due delivery:" in output and "(due 1:00:00 ago, not started)" in output
    assert "Workflows: running 2, stranded 1, overdue 1, parked 1, blocked 2" in output


@pytest.mark.django_db
def test_status_is_ok_without_overdue_work_even_with_no_cluster(chrono_forge_env):
    Workflow.objects.create(job_class=ONE_STEP, key="k", next_run_at=clock.now())
    output, error = status()
    assert error is None and output.rstrip().endswith("OK")
    assert "overdue 0" in output


@pytest.mark.django_db
def test_a_process_local_stats_cache_makes_the_clusters_unknown(chrono_forge_env, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "CACHE", "default")  # LocMemCache: each process has its own
    fleet()
    output, error = status()
    assert (
        "Clusters: unknown (django-q2 keeps cluster stats in the cache 'default' (LocMemCache)"
        in (output)
    )
    assert "Q_CLUSTER['cache']" in output
    assert error is not None and "no cluster can be seen" in str(error)


@pytest.mark.django_db
def test_the_queue_depth_counts_ready_tasks_of_the_pass_queue(chrono_forge_env):
    from django_q.conf import Conf
    from django_q.models import OrmQ

    now = clock.now()
    OrmQ.objects.create(key=Conf.CLUSTER_NAME, payload="x", lock=now - timedelta(seconds=1))
    OrmQ.objects.create(key=Conf.CLUSTER_NAME, payload="x", lock=now - timedelta(seconds=2))
    OrmQ.objects.create(key=Conf.CLUSTER_NAME, payload="x", lock=now + timedelta(hours=1))
    OrmQ.objects.create(key="another-queue", payload="x", lock=now - timedelta(seconds=1))
    assert health.queue_depth() == (2, "")


# -- the admin Overview ------------------------------------------------------------------------
@pytest.fixture
def staff(client, login_as):
    """The test client logged in as a staff user who may view workflows."""
    login_as()
    return client


@pytest.mark.django_db
def test_the_overview_shows_the_workers_and_a_banner_when_no_cluster_is_alive(
    staff, chrono_forge_env
):
    fleet()
    page = staff.get(reverse("admin:chrono_forge_workflow_overview")).content.decode()
    assert "No qcluster is alive:" in page and "1 workflow is overdue" in page
    assert "0 of 0 seen" in page
    assert "running 2 · stranded 1 · overdue 1 · parked 1 · blocked 2" in page


@pytest.mark.django_db
def test_the_overview_has_no_banner_when_a_cluster_is_alive(staff, chrono_forge_env, monkeypatch):
    alive = health.Cluster("c1", "host-a", 42, "Idle", 2, 60.0)
    monkeypatch.setattr(health, "clusters", lambda: ([alive], ""))
    page = staff.get(reverse("admin:chrono_forge_workflow_overview")).content.decode()
    assert "No qcluster is alive" not in page and "1 of 1 seen" in page
    assert "host-a pid 42" in page


# -- under a real qcluster ---------------------------------------------------------------------
def status_process(timeout=60) -> subprocess.CompletedProcess:
    """``python -m django chrono_forge status`` in its own process, on the test database."""
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        CHRONO_FORGE_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
        CHRONO_FORGE_TEST_QSTATS_DIR=settings.CACHES["django_q"]["LOCATION"],
        PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p),
    )
    return subprocess.run(
        [sys.executable, "-m", "django", "chrono_forge", "status"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_status_sees_a_real_qcluster_and_fails_once_it_is_gone(qcluster):
    Workflow.objects.create(
        job_class=ONE_STEP,
        key="overdue",
        state="stalled",
        next_run_at=clock.now() - timedelta(hours=1),  # a pending retry nobody delivers
    )
    cluster = qcluster()

    def seen_alive():
        done = status_process()
        return done if "Clusters: 1 alive" in done.stdout else None

    done = wait_for(seen_alive, timeout=30, message="status to see the cluster")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pid {cluster.pid}  " in done.stdout
    assert "overdue 1" in done.stdout and done.stdout.rstrip().endswith("OK")

    cluster.stop()

    def seen_gone():
        done = status_process()
        return done if "Clusters: 0 alive" in done.stdout else None

    done = wait_for(seen_gone, timeout=30, message="the cluster's stats to expire")
    assert done.returncode == 1
    assert "1 overdue workflow(s) and no live cluster" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_killed_qcluster_disappears_from_status_within_its_stats_expiry(qcluster):
    """SIGKILL leaves no "Stopped" stat behind: the cluster's last stat expires (3 s) instead."""
    import signal

    Workflow.objects.create(
        job_class=ONE_STEP,
        key="overdue",
        state="stalled",
        next_run_at=clock.now() - timedelta(hours=1),
    )
    cluster = qcluster()
    wait_for(
        lambda: "Clusters: 1 alive" in status_process().stdout,
        timeout=30,
        message="status to see the cluster",
    )
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.process.wait()

    def seen_gone():
        done = status_process()
        return done if "Clusters: 0 alive of 0 seen" in done.stdout else None

    done = wait_for(seen_gone, timeout=30, message="the killed cluster's stats to expire")
    assert done.returncode == 1
    assert "1 overdue workflow(s) and no live cluster" in done.stderr
