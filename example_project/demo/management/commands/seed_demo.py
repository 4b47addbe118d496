from django.core.management.base import BaseCommand

from chrono_forge.models import Workflow
from example_project.demo.workflows import DEMOS


class Command(BaseCommand):
    help = "Enqueue the demo workflows (those not already in the database)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", action="store_true", help="delete the demo workflows first, then enqueue"
        )

    def handle(self, *args, reset=False, **options):
        keys = [demo.key for demo in DEMOS]
        if reset:
            deleted, _ = Workflow.objects.filter(key__in=keys).delete()
            self.stdout.write(f"deleted {deleted} rows of earlier demo workflows")
        existing = dict(Workflow.objects.filter(key__in=keys).values_list("key", "state"))
        for demo in DEMOS:
            name = demo.workflow_class.__name__
            if demo.key in existing:
                self.stdout.write(
                    f"  {demo.key:<18} {name:<22} already there ({existing[demo.key]})"
                )
                continue
            demo.workflow_class.perform_later(demo.key, **demo.kwargs)
            self.stdout.write(f"  {demo.key:<18} {name:<22} enqueued")
