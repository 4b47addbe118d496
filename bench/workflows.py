"""The benchmark's workflows and the bare django-q2 task it compares them with."""

from django.contrib.auth.models import Group

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
