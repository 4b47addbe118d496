"""The benchmark's workflows and the bare django-q2 task it compares them with."""

from django.contrib.auth.models import Group
from django.utils import timezone

from chrono_forge import DurableWorkflow


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
