import time

from django.core.management.base import BaseCommand, CommandError

from chrono_forge.models import Workflow
from example_project.demo.workflows import DEMOS

FINAL_STATES = {"completed", "failed", "stalled"}


class Command(BaseCommand):
    help = (
        "Show the demo workflows; exit 0 when each is in its expected state (all completed, "
        "except the deliberately failing one, which must be stalled)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="poll until every demo workflow is in its expected state, for up to SECONDS",
        )

    def handle(self, *args, wait=0, **options):
        deadline = time.monotonic() + wait
        while True:
            states = dict(
                Workflow.objects.filter(key__in=[d.key for d in DEMOS]).values_list("key", "state")
            )
            pending = [d for d in DEMOS if states.get(d.key) != d.expected_state]
            # A workflow that reached the wrong final state will not change by itself: stop early.
            stuck = [d for d in pending if states.get(d.key) in FINAL_STATES]
            if not pending or stuck or time.monotonic() >= deadline:
                break
            time.sleep(0.25)

        for demo in DEMOS:
            state = states.get(demo.key, "missing")
            note = "ok" if state == demo.expected_state else f"expected {demo.expected_state}"
            if demo.expected_state == "stalled" and state == "stalled":
                note = "ok (fails on purpose: see its errors in the admin)"
            self.stdout.write(
                f"  {demo.key:<18} {demo.workflow_class.__name__:<22} {state:<10} {note}"
            )
        if pending:
            raise CommandError(
                f"{len(pending)} of {len(DEMOS)} demo workflows are not in their expected state"
            )
        self.stdout.write(self.style.SUCCESS(f"all {len(DEMOS)} demo workflows as expected"))
