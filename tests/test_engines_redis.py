"""End to end on django-q2's Redis broker, against a real redis-server (scripts/test starts one).

Redis has no delayed delivery: a continuation due later is a django-q2 ``Schedule`` (ONCE) that the
cluster's scheduler pushes to Redis when it runs, every 30 s. Redis is at-most-once: a task it held
when it restarted is gone, and ``resume-overdue`` is what brings the workflow back.
"""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Schedule
from django_q.scheduler import scheduler

from chrono_forge import clock
from chrono_forge.models import Workflow
from tests import workflows_engines as we
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

#: django-q2's cluster runs its scheduler every 30 s (hard-coded in its guard loop); the pusher
#: polls Redis with a 1 s BLPOP. A continuation due later may thus be up to ~31 s late, never early.
SCHEDULER_PERIOD = timedelta(seconds=30)
PUSH_SLACK = timedelta(seconds=2)


def finished(*keys):
    def check():
        states = dict(Workflow.objects.filter(key__in=keys).values_list("key", "state"))
        bad = {k: s for k, s in states.items() if s in ("failed", "stalled")}
        if bad:
            raise AssertionError(f"workflows ended badly: {bad}")
        return len(states) == len(keys) and set(states.values()) == {"completed"}

    return check


def executions(key):
    return [step for run_key, step, _, _ in we.runs() if run_key == key]


def test_waits_go_through_one_off_schedules_and_are_at_most_one_scheduler_period_late(
    redis_broker, runs_table, qcluster
):
    """The one measurement of the Redis path's delay precision (takes about 30 s)."""
    qcluster(extra_env={"DJANGO_SETTINGS_MODULE": redis_broker.settings_module})
    # Immediate work goes straight through Redis.
    we.Pipeline.perform_later("now")
    wait_for(finished("now"), timeout=15, message="the immediate pipeline")
    assert executions("now") == ["fetch", "transform", "store"]

    # Waits due at different points of one scheduler period, so the lateness spans it.
    pauses = [1, 5, 10, 15, 20]
    keys = [f"wait-{pause}" for pause in pauses]
    for key, pause in zip(keys, pauses, strict=True):
        we.Pipeline.perform_later(key, pause=pause)
    wait_for(
        lambda: Schedule.objects.filter(name__startswith="chrono_forge:").count() == len(keys),
        timeout=15,
        message="one ONCE schedule per waiting workflow",
    )
    assert set(Schedule.objects.values_list("schedule_type", flat=True)) == {Schedule.ONCE}
    assert Workflow.objects.filter(key__in=keys, state="idle").count() == len(keys)

    wait_for(finished(*keys), timeout=60, interval=0.2, message="the waiting pipelines")
    late = {}
    for key in keys:
        wf = Workflow.objects.get(key=key)
        step = wf.execution_logs.get(step_name="wait$pause")
        deadline = datetime.fromisoformat(step.metadata["wait_until"])
        late[key] = step.completed_at - deadline
        assert timedelta(0) <= late[key] <= SCHEDULER_PERIOD + PUSH_SLACK, (key, late[key])
        assert executions(key) == ["fetch", "transform", "store"]
    print(
        "\nRedis broker, lateness of a wait's continuation (s): "
        + ", ".join(f"{key}: {delta.total_seconds():.2f}" for key, delta in late.items())
    )
    # Each schedule ran once and is gone.
    assert not Schedule.objects.filter(name__startswith="chrono_forge:").exists()


def test_a_continuation_lost_in_a_redis_restart_is_recovered_by_resume_overdue(
    redis_broker, runs_table, qcluster
):
    queue = Conf.CLUSTER_NAME
    we.Pipeline.perform_now("lost", pause=0.3)  # fetch runs, the wait becomes a ONCE schedule
    wf = Workflow.objects.get(key="lost")
    assert wf.state == "idle" and wf.next_run_at is not None
    assert Schedule.objects.filter(name__startswith="chrono_forge:").count() == 1
    wait_for(lambda: clock.now() > wf.next_run_at, timeout=5, message="the wait's deadline")

    # The cluster's scheduler step hands the due continuation to Redis...
    scheduler(broker=get_broker())
    assert redis_broker.queued(queue) == 1
    assert not Schedule.objects.filter(name__startswith="chrono_forge:").exists()
    # ... and Redis restarts before a worker takes it: the task is gone.
    redis_broker.restart()
    assert redis_broker.queued(queue) == 0

    cluster = qcluster(extra_env={"DJANGO_SETTINGS_MODULE": redis_broker.settings_module})
    time.sleep(1.5)  # a running cluster, an overdue workflow: nothing comes
    wf.refresh_from_db()
    assert wf.state == "idle" and wf.next_run_at < clock.now()
    assert executions("lost") == ["fetch"]
    assert list(Workflow.objects.overdue(timedelta(0))) == [wf]

    out = io.StringIO()
    call_command("chrono_forge", "resume-overdue", "--grace", "0", stdout=out)
    assert "Re-enqueued 1 overdue workflow(s)" in out.getvalue()
    wait_for(finished("lost"), timeout=15, message="the recovered pipeline")
    assert executions("lost") == ["fetch", "transform", "store"]

    # The cluster survives a Redis restart under it: new work still arrives (django-q2's pusher
    # dies on the lost connection and its guard starts a new one within ~10 s).
    redis_broker.restart()
    we.Pipeline.perform_later("after-restart")
    wait_for(finished("after-restart"), timeout=30, message="a pipeline after the restart")
    assert executions("after-restart") == ["fetch", "transform", "store"]
    assert cluster.is_running()
