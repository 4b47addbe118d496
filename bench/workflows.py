"""The benchmarks' workflows and the bare django-q2 task the fan-out bench compares them with."""

import random
import time

from django.contrib.auth.models import Group
from django.utils import timezone

from chrono_forge import DurableWorkflow, RetryPolicy


def noop(index):
    """The bare django-q2 baseline: a trivial task."""
    return index


class Child(DurableWorkflow):
    """A trivial child: one durable step, no I/O."""

    def perform(self, *, item):
        self.durably_execute(self.work)

    def work(self):
        return 1


class Parent(DurableWorkflow):
    """spawn_each over the Group rows named ``<prefix>-*`` (a QuerySet, streamed by primary key)."""

    def perform(self, *, prefix, of=1000):
        self.branch("fan", self.dispatch, automerge=True)

    def dispatch(self):
        kwargs = self.workflow.kwargs
        rows = Group.objects.filter(name__startswith=f"{kwargs['prefix']}-")
        self.spawn_each(
            "items", rows, lambda row: (Child, {"item": row.pk}), of=kwargs.get("of", 1000)
        )


def raw_child(workflow_id):
    """The raw ORM baseline of one child: the writes and commits of a trivial child's pass (lock,
    step INSERT, step UPDATE, completion marker + workflow UPDATE), done with plain ORM calls."""
    from django.db import transaction

    from chrono_forge.models import ExecutionLog, Workflow

    now = timezone.now()
    with transaction.atomic():
        Workflow.objects.select_for_update().only("id", "state", "locked_by").get(pk=workflow_id)
        Workflow.objects.filter(pk=workflow_id).update(
            locked_by="raw", locked_at=now, state="running", started_at=now, modified=now
        )
    step = ExecutionLog.objects.create(
        workflow_id=workflow_id,
        step_name="durably_execute$work",
        state="pending",
        attempts=1,
        started_at=now,
        last_executed_at=now,
        created=now,
        modified=now,
    )
    ExecutionLog.objects.filter(pk=step.pk).update(
        state="completed", completed_at=now, result=1, modified=now
    )
    with transaction.atomic():
        ExecutionLog.objects.create(
            workflow_id=workflow_id,
            step_name="$workflow_completion$",
            state="completed",
            attempts=1,
            started_at=now,
            last_executed_at=now,
            completed_at=now,
            created=now,
            modified=now,
        )
        Workflow.objects.filter(pk=workflow_id, locked_by="raw").update(
            state="completed", completed_at=now, locked_by=None, locked_at=None, modified=now
        )


# -- throughput bench (bench/throughput.py) -------------------------------------------------------
#: Every application write of the throughput bench is a row of this side table (bench/throughput.py
#: creates it): the item, the step, when it was written (time.time()) and by which process.
THROUGHPUT_TABLE = "chrono_forge_bench_write"


def application_write(item: str, step: int) -> None:
    """One small application write, committed on its own: what each step does, in both runs."""
    import os

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {THROUGHPUT_TABLE} (item, step, at, pid) VALUES (%s, %s, %s, %s)",
            [item, step, time.time(), os.getpid()],
        )


class ThreeSteps(DurableWorkflow):
    """Three durable steps, each one application write."""

    def perform(self, *, item):
        self.durably_execute(self.first)
        self.durably_execute(self.second)
        self.durably_execute(self.third)

    def first(self):
        application_write(self.key, 0)

    def second(self):
        application_write(self.key, 1)

    def third(self):
        application_write(self.key, 2)


def bare_three_writes(item):
    """The bare django-q2 baseline of ThreeSteps: the same three application writes in one task."""
    for step in range(3):
        application_write(item, step)


# -- chaos bench (bench/chaos.py) ------------------------------------------------------------------
#: Every execution of a chaos step body is a row of this side table (bench/chaos.py creates it).
CHAOS_TABLE = "chrono_forge_chaos_execution"


def record_execution(workflow, step: str) -> None:
    """One row per execution of a step body, in its own committed transaction, flagged when the
    step's completion was already committed when the body started (which must never happen)."""
    import os

    from django.db import connections, transaction

    from chrono_forge import conf
    from chrono_forge.models import ExecutionLog

    alias = conf.database()
    with transaction.atomic(using=alias):
        done = ExecutionLog.objects.filter(
            workflow_id=workflow.pk, step_name=step, state="completed"
        ).exists()
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {CHAOS_TABLE} (workflow_key, step, pid, started, after_completion) "
                "VALUES (%s, %s, %s, %s, %s)",
                [workflow.key, step, os.getpid(), time.time(), done],
            )


class ChaosSteps(DurableWorkflow):
    """``steps`` durable steps, with a durable pause half-way (a delayed continuation in the queue).

    Steps retry (almost) without limit: a step whose attempts are cut short by kills must not use
    up its budget, since the chaos bench measures recovery, not retry policies."""

    retry_policy = RetryPolicy(max_attempts=100, base=0.2, cap=1)

    def perform(self, *, steps, pause=2.0, work=0.03):
        for index in range(steps):
            if index == steps // 2 and pause:
                self.wait(pause, "pause")
            self.index, self.work = index, work
            self.durably_execute(self.step, name=f"s{index}")

    def step(self):
        record_execution(self.workflow, f"durably_execute$s{self.index}")
        time.sleep(random.uniform(0.5, 1.5) * self.work)
        return self.index


class ChaosFanout(ChaosSteps):
    """A step, a branch of ``children`` ChaosSteps children (each with its pause) merged by a
    poller, a last step."""

    def perform(self, *, children=4, child_steps=3, pause=2.0, work=0.03):
        self.index, self.work = 0, work
        self.durably_execute(self.step, name="s0")
        self.branch("fan", self.dispatch)
        self.merge_branches("fan", min_interval=0.5, max_interval=1.0)
        self.index = 1
        self.durably_execute(self.step, name="s1")

    def dispatch(self):
        kwargs = self.workflow.kwargs
        for index in range(kwargs.get("children", 4)):
            self.spawn(
                f"c{index}",
                ChaosSteps,
                steps=kwargs.get("child_steps", 3),
                pause=kwargs.get("pause", 2.0),
                work=kwargs.get("work", 0.03),
            )
