"""``python manage.py chrono_forge <subcommand>``: inspect and operate workflows.

start CLASS KEY [--kwargs JSON]             (perform_later from the shell)
list [--state S|blocked] [--class C] [--limit N] [--overdue] [--parked] [--all]
show KEY [--class C] [--full] [--traceback]
resume KEY                                   retry KEY [--now] [--force]
cancel KEY [--reason TEXT] [--class C]       (the run and its branch children)
send KEY TOPIC --json JSON [--idempotency-key K] [--class C]
reap [--stale-after MIN]                     resume-overdue [--grace MIN]
cleanup [--older-than DAYS ...] [--dry-run]  maintenance --install | --uninstall
status                                       (exit 1: work is overdue and no cluster is alive)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from chrono_forge import conf, deadlines, health, maintenance, operations, registry, step_names
from chrono_forge.exceptions import ChronoForgeError
from chrono_forge.graph import as_dict
from chrono_forge.liveness import is_stranded, liveness, pending_merges
from chrono_forge.models import ErrorLog, ExecutionLog, Message, Workflow
from chrono_forge.pages import queries
from chrono_forge.pages.formatting import is_failure_marker
from chrono_forge.pages.queries import ERROR_CAP
from chrono_forge.pages.workflow_page import PeriodicTask, TimelineRow, WorkflowPage, workflow_page
from chrono_forge.workflow import resolve_workflow_class

if TYPE_CHECKING:
    from chrono_forge.workflow import DurableWorkflow

FAILURE_PREFIX = step_names.FAILURE_MARKER_PREFIX


def _duration_type(unit: str, seconds: int):
    """An argparse type: a finite number of ``unit`` (each ``seconds`` long) from 0 up to
    LONGEST_DURATION, so ``now - it`` is always a valid datetime."""
    longest = conf.LONGEST_DURATION.total_seconds() / seconds

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not 0 <= number <= longest:  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(
                f"expected a number of {unit} from 0 to {longest:g}, got {text!r}"
            )
        return number

    parse.__name__ = unit
    return parse


def _bounded_int(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, got {text!r}"
            )
        return number

    parse.__name__ = "integer"
    return parse


def _text(max_length: int | None):
    """An argparse type: a string of at most ``max_length`` characters without NUL (no database
    column holds one: PostgreSQL refuses it)."""

    def parse(text: str) -> str:
        if "\0" in text:
            raise argparse.ArgumentTypeError("must not contain a NUL character")
        if max_length is not None and len(text) > max_length:
            raise argparse.ArgumentTypeError(
                f"expected at most {max_length} characters, got {len(text)}"
            )
        return text

    parse.__name__ = "text"
    return parse


MINUTES = _duration_type("minutes", 60)
DAYS = _duration_type("days", 24 * 60 * 60)
KEY = _text(Workflow._meta.get_field("key").max_length)
REASON = _text(Workflow._meta.get_field("cancel_reason").max_length)
CLASS = _text(Workflow._meta.get_field("job_class").max_length)
#: More rows than anyone reads in a terminal; keeps the LIMIT inside every database's integer range.
ROWS = _bounded_int(1, 100_000)


def _short(value: Any, limit: float = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: int(limit) - 3] + "..."


def _json_object(text: str) -> dict[str, Any]:
    """argparse type of --kwargs: a JSON object (perform_later validates its values)."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object of keyword arguments, not {type(value).__name__}"
        )
    return value


def _json_value(text: str) -> Any:
    """argparse type of --json: any JSON value (send validates what it may store)."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None


@contextlib.contextmanager
def _log_level(name: str, level: int):
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _seconds(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


#: The WAITING column of ``list``: what an unfinished workflow waits for (see the four states).
WAITING_LABELS = {
    "scheduled": "scheduled",
    "first_pass": "first-pass",
    "merge_poll": "merge-poll",
    "retry": "retry-requested",
    "on_cancel": "on-cancel-hook",
    "unaccounted": "NOTHING-SCHEDULED",
}


def _waiting(row: Workflow, merge_pending: bool) -> str:
    """ "scheduled", "first-pass", "merge-poll", "parked:<step>", "retry-requested" (+"!OVERDUE"),
    "STRANDED" for a stale lock, "-" for the rest."""
    if is_stranded(row):
        return "STRANDED"
    reason = liveness(row, merge_pending=merge_pending)
    if reason is None:
        return "-"
    label = f"parked:{row.parked_on}" if reason.kind == "parked" else WAITING_LABELS[reason.kind]
    return f"{label}!OVERDUE" if reason.overdue else label


def _duration(start: datetime | None, end: datetime | None) -> str:
    if not (start and end):
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds:.3f}s" if seconds < 60 else str(timedelta(seconds=round(seconds)))


class Command(BaseCommand):
    help = "Inspect and operate chrono_forge workflows (list, show, resume, retry, reap, ...)."

    def add_arguments(self, parser: CommandParser) -> None:
        subs = parser.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)

        def sub(name: str, help: str, key: bool = False) -> CommandParser:
            p = subs.add_parser(name, help=help, description=help)
            if key:
                p.add_argument("key", type=KEY, metavar="KEY", help="the workflow key")
                p.add_argument(
                    "--class",
                    dest="job_class",
                    type=CLASS,
                    metavar="CLASS",
                    help="the workflow class (dotted path or class name) when KEY is ambiguous",
                )
            return p

        p = sub(
            "start",
            "Start a workflow run, as CLASS.perform_later(KEY, **kwargs) would (a key that exists "
            "is not started twice: it gets a wake-up).",
        )
        p.add_argument(
            "workflow_class", type=CLASS, metavar="CLASS", help="dotted path or class name"
        )
        p.add_argument("key", type=KEY, metavar="KEY", help="the workflow key")
        p.add_argument(
            "--kwargs",
            type=_json_object,
            default={},
            metavar="JSON",
            help="perform()'s keyword arguments as a JSON object, e.g. '{\"user_id\": 7}'",
        )

        p = sub("list", "List workflows, newest first (branch children hidden unless --all).")
        p.add_argument(
            "--state",
            choices=[*Workflow.STATE._db_values, "blocked"],
            help="a state, or `blocked` (failed + stalled: what needs an operator)",
        )
        p.add_argument(
            "--all",
            dest="include_children",
            action="store_true",
            help="include branch children (hidden by default, as in the admin)",
        )
        p.add_argument(
            "--top-level",
            dest="include_children",
            action="store_false",
            help="only top-level runs, no branch children (the default)",
        )
        p.add_argument(
            "--class",
            dest="job_class",
            type=CLASS,
            metavar="CLASS",
            help="dotted path or class name",
        )
        p.add_argument("--limit", type=ROWS, default=50, help="at most this many rows (default 50)")
        p.add_argument(
            "--overdue",
            action="store_true",
            help="only deliveries late past RESUME_OVERDUE_GRACE (what resume-overdue re-sends)",
        )
        p.add_argument(
            "--parked", action="store_true", help="only runs parked on an event (continue_if)"
        )

        p = sub(
            "show",
            "Show a workflow's timeline: steps, attempts, timings, results and errors.",
            key=True,
        )
        p.add_argument(
            "--full", action="store_true", help="print values and messages in full, never cut off"
        )
        p.add_argument(
            "--traceback", action="store_true", help="print each error's recorded traceback"
        )
        sub(
            "resume",
            "Re-enqueue an idle workflow (e.g. after the event a continue_if waits for).",
            key=True,
        )
        p = sub(
            "send",
            "Send a message to a workflow run, as CLASS.send(KEY, TOPIC, payload) would: stored "
            "for a receive(TOPIC) to consume, and the run is woken.",
            key=True,
        )
        p.add_argument("topic", metavar="TOPIC", help="the message topic")
        p.add_argument(
            "--json",
            dest="payload",
            type=_json_value,
            required=True,
            metavar="JSON",
            help="the payload as JSON, e.g. '{\"amount\": 5}'",
        )
        p.add_argument(
            "--idempotency-key",
            metavar="KEY",
            help="a repeat of this key (per run) stores nothing and prints the first message",
        )
        p = sub("retry", "Retry a failed or stalled workflow.", key=True)
        p.add_argument(
            "--now", action="store_true", help="run the retry pass here instead of enqueuing it"
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="also retry a cancelled run: it replays from the top (completed steps return "
            "their stored results, the interrupted step runs again); its cancelled branch "
            "children stay cancelled",
        )
        p = sub(
            "cancel",
            "Cancel a workflow run and its branch children: an idle, scheduled or parked run "
            "at once, a running pass before its next step body.",
            key=True,
        )
        p.add_argument(
            "--reason",
            type=REASON,
            default="",
            metavar="TEXT",
            help="why (shown in the admin and by `show`)",
        )

        p = sub("reap", "Re-enqueue running workflows whose lock is stale (their worker died).")
        p.add_argument(
            "--stale-after",
            type=MINUTES,
            metavar="MINUTES",
            help="lock age in minutes (default: REAP_STALE_AFTER, 3 x MAX_DURATION)",
        )
        p = sub(
            "resume-overdue",
            "Cancel runs past their deadline, then re-send deliveries that are overdue (lost by "
            "the broker): first passes, continuations, wake-ups, merge polls and operator "
            "retries.",
        )
        p.add_argument(
            "--grace",
            type=MINUTES,
            metavar="MINUTES",
            help="how late, in minutes, before a continuation counts as lost "
            "(default: RESUME_OVERDUE_GRACE)",
        )

        p = sub("cleanup", "Delete old completed/failed workflows and prune old repetition logs.")
        p.add_argument(
            "--older-than",
            type=DAYS,
            default=90,
            metavar="DAYS",
            help="terminal for longer than this (default 90)",
        )
        p.add_argument("--completed-older-than", type=DAYS, metavar="DAYS")
        p.add_argument("--failed-older-than", type=DAYS, metavar="DAYS")
        p.add_argument(
            "--prune-repetitions-older-than",
            type=DAYS,
            metavar="DAYS",
            help="also prune durably_repeat repetition logs this old (behind the frontier)",
        )
        p.add_argument("--batch-size", type=ROWS, default=1000)
        p.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

        p = sub("graph", "List the durable steps of a workflow class's perform(), from its source.")
        p.add_argument(
            "workflow_class",
            type=CLASS,
            metavar="CLASS",
            help="dotted path (or class name of a stored run)",
        )
        p.add_argument("--json", dest="as_json", action="store_true", help="print JSON")

        sub(
            "status",
            "Worker liveness and the backlog: live qclusters, queue depth, the oldest due "
            "delivery, running/stranded/overdue/parked/blocked counts. Exits with status 1 when "
            "work is overdue and no cluster is alive (a health probe).",
        )

        p = sub(
            "maintenance",
            "Register (or remove) the django-q2 Schedules for reap, resume-overdue "
            "and a daily cleanup.",
        )
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--install", action="store_true")
        group.add_argument("--uninstall", action="store_true")

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            output = super().execute(*args, **options)
            self.stdout.flush()  # a closed pipe fails here, not in the interpreter's exit flush
        except BrokenPipeError:
            if self.stdout._out is not sys.stdout:
                raise  # a stream the caller passed in: theirs to handle
            # The reader went away (`show KEY | head`): stop quietly, as Unix tools do. Point stdout
            # at /dev/null so the interpreter's final flush does not fail again.
            # mypy narrows sys.stdout to the type of ``_out`` after the ``is not`` test above.
            fileno = sys.stdout.fileno()  # type: ignore[attr-defined]
            os.dup2(os.open(os.devnull, os.O_WRONLY), fileno)
            sys.exit(1)
        return output

    def handle(self, *args: Any, sub: str, **options: Any) -> None:
        handler = getattr(self, "handle_" + sub.replace("-", "_"))
        # django-q2 logs an INFO line per enqueue ("Enqueued [cluster] 1") on stderr: noise in
        # this command's output, kept at -v 2 for debugging.
        quiet = options.get("verbosity", 1) < 2
        with _log_level("django-q", logging.WARNING) if quiet else contextlib.nullcontext():
            try:
                handler(**options)
            except ChronoForgeError as error:
                raise CommandError(str(error)) from error

    # -- start ----------------------------------------------------------------------------------
    def handle_start(self, workflow_class: str, key: str, kwargs: dict[str, Any], **_: Any) -> None:
        cls = self.resolve_class(workflow_class)
        existed = Workflow.objects.filter(job_class=registry.job_class_of(cls), key=key).exists()
        try:
            row = cls.perform_later(key, **kwargs)
        except (TypeError, ValueError) as error:  # kwargs or key perform_later refuses
            raise CommandError(f"{workflow_class} {key}: {error}") from error
        if existed:
            self.stdout.write(
                f"{row} already exists (id={row.pk}, state {row.state}): not started again; "
                "it was sent a wake-up."
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Started {row} (id={row.pk})."))

    @staticmethod
    def resolve_class(name: str) -> type[DurableWorkflow]:
        classes = registry.registered()
        if name in classes:
            return classes[name]
        matches = sorted(path for path in classes if path.rsplit(".", 1)[-1] == name)
        if len(matches) == 1:
            return classes[matches[0]]
        if matches:
            raise CommandError(
                f"{name!r} matches several classes ({', '.join(matches)}); give the dotted path."
            )
        known = ", ".join(sorted(classes)) or "none"
        raise CommandError(
            f"{name!r} is not a registered workflow class (registered: {known}). "
            "Workflow classes register when their module is imported: define them in a "
            f"`{registry.MODULE_NAME}` module of an installed app, or list their module in "
            "CHRONO_FORGE['WORKFLOW_MODULES']."
        )

    # -- lookups --------------------------------------------------------------------------------
    @staticmethod
    def class_filter(job_class: str | None) -> Q:
        if not job_class:
            return Q()
        if "." in job_class:
            return Q(job_class=job_class)
        return Q(job_class__endswith="." + job_class)

    def get_workflow(self, key: str, job_class: str | None) -> Workflow:
        matches = list(Workflow.objects.filter(self.class_filter(job_class), key=key)[:11])
        if not matches:
            where = f" of class {job_class}" if job_class else ""
            raise CommandError(
                f"No workflow with key {key!r}{where}. Find it with `manage.py chrono_forge list`."
            )
        if len(matches) > 1:
            classes = ", ".join(sorted(m.job_class for m in matches))
            raise CommandError(
                f"Key {key!r} matches several workflows ({classes}); choose one with --class."
            )
        return matches[0]

    # -- list / show -------------------------------------------------------------------------------
    def handle_list(
        self,
        state: str | None,
        job_class: str | None,
        limit: int,
        overdue: bool = False,
        parked: bool = False,
        include_children: bool = False,
        **_: Any,
    ) -> None:
        rows = Workflow.objects.filter(self.class_filter(job_class))
        if state == "blocked":
            rows = rows.blocked()
        elif state:
            rows = rows.filter(state=state)
        if overdue:
            rows = rows.filter(pk__in=Workflow.objects.overdue().values("pk"))
        if parked:
            rows = rows.filter(pk__in=Workflow.objects.parked().values("pk"))
        with_children = rows
        if not include_children:
            rows = rows.filter(parent_execution_log__isnull=True)
        rows = list(
            rows.order_by("-pk").only(
                "id",
                "job_class",
                "key",
                "state",
                "created",
                "modified",
                "started_at",
                "next_run_at",
                "completed_at",
                "locked_at",
                "parked_on",
                "parked_since",
            )[:limit]
        )
        merging = pending_merges(r.pk for r in rows if r.state == Workflow.STATE.idle)
        lines = [
            (
                str(r.pk),
                r.job_class,
                r.key,
                r.state,
                _waiting(r, r.pk in merging),
                _time(r.created),
                _time(r.next_run_at),
                _time(r.completed_at),
            )
            for r in rows
        ]
        if not lines:
            hidden = not include_children and with_children.exists()
            hint = " (only branch children match: --all shows them)" if hidden else ""
            self.stdout.write(f"No workflows match{hint}.")
            return
        header = ("ID", "CLASS", "KEY", "STATE", "WAITING", "CREATED", "NEXT RUN", "COMPLETED")
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        for row in [header, *lines]:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        if len(lines) == limit:
            self.stdout.write(f"(first {limit}; use --limit for more)")

    def handle_show(
        self,
        key: str,
        job_class: str | None,
        full: bool = False,
        traceback: bool = False,
        **_: Any,
    ) -> None:
        """The admin's workflow page as text: the same page model (pages.workflow_page), so the
        timeline, which step each error belongs to and the banners say what the admin says."""
        self.full, self.traceback, self.cut = full, traceback, False
        wf = self.get_workflow(key, job_class)
        page = workflow_page(wf)
        _short = self.short
        out = self.stdout.write
        out(self.style.MIGRATE_HEADING(f"{wf}  [{wf.job_class}]  id={wf.pk}"))
        out(
            f"  state: {wf.state}    created: {_time(wf.created)}    "
            f"started: {_time(wf.started_at)}    "
            f"completed: {_time(wf.completed_at)}"
        )
        out(
            f"  next run: {_time(wf.next_run_at)}    locked by: {wf.locked_by or '-'} "
            f"(since {_time(wf.locked_at)})"
        )
        if wf.deadline_at is not None:
            out(f"  deadline: {_time(wf.deadline_at)}")
        if wf.state == Workflow.STATE.cancelled:
            reason = wf.cancel_reason or "(no reason given)"
            out(f"  cancelled: {_time(wf.cancelled_at)}    reason: {_short(reason, 255)}")
        out(f"  kwargs: {_short(wf.kwargs, 200)}")
        out(f"  context: {_short(wf.context, 200)}")
        if wf.state == Workflow.STATE.completed:
            out(f"  result: {_short(wf.result, 200)}")
        self.show_banners(page)

        out("")
        out(self.style.MIGRATE_HEADING("Timeline"))
        if not page.timeline:
            out("  (no steps yet)")
        for number, row in enumerate(page.timeline, 1):
            self.show_step(number, row)
        if page.timeline_capped:
            out(f"  (the first {len(page.timeline)} steps; the rest are not shown)")
        if page.orphans:
            out("")
            out(self.style.MIGRATE_HEADING("Errors outside any step"))
            for card in page.orphans:
                self.show_error(card.error, indent="  ")
        if page.errors_capped:
            out("")
            out(
                f"(the newest {ERROR_CAP} errors are shown; older ones are in the ErrorLog table, "
                "the admin's Errors list)"
            )
        if self.cut:
            out("")
            out("(long values were cut off: --full shows them in full, --traceback the tracebacks)")

    full = traceback = cut = False

    def short(self, value: Any, limit: int = 60) -> str:
        """``_short`` unless --full; remembers that something was cut, for the closing hint."""
        if self.full:
            return _short(value, math.inf)
        text = _short(value, limit)
        self.cut = self.cut or text.endswith("...") and text != _short(value, math.inf)
        return text

    def show_banners(self, page: WorkflowPage) -> None:
        """The change page's banners: where a blocked run is stuck, a stale lock, the wait a run
        is parked on, why an unfinished run waits, a replay that diverged."""
        wf, out = page.workflow, self.stdout.write
        if wf.retryable:
            row = page.blocked_row
            where = ""
            if row is not None and row.step.kind == "workflow":
                where = ": perform() raised and the workflow-level retries ran out"
            elif row is not None:
                where = f" at {row.step.label} {row.step.name}"
                where += f" ({row.failed_text})" if row.log.attempts else ""
            out(self.style.ERROR(f"  {wf.state}{where}"))
            if page.banner_error is not None:
                error = page.banner_error
                out(
                    self.style.ERROR(
                        f"    {error.error_class}: {self.short(error.error_message, 120)}"
                    )
                )
        if page.stranded:
            out(
                self.style.ERROR(
                    f"  stranded: running, but the lock is stale (since {_time(wf.locked_at)}, "
                    f"held by worker {wf.locked_by}): `chrono_forge reap` takes it over"
                )
            )
        if page.wait is not None:
            wait = page.wait
            on = f" on {wait.condition}" if wait.condition != wait.step else ""
            until = (
                f"timeout {_time(wait.timeout_at)}"
                if wait.timeout_at
                else "no timeout: it resumes only when the workflow is resumed (an event arrives)"
            )
            out(
                f"  waiting: step {wait.step} ({wait.step_name}){on} "
                f"since {_time(wait.since)}; {until}"
            )
        if page.liveness is not None:
            why = page.liveness
            late = (
                "  (overdue: `chrono_forge resume-overdue` sends it again)" if why.overdue else ""
            )
            out(f"  why: {why.text} {_time(why.at)}{late}")
        if page.divergences:
            first = page.divergences[-1]
            more = f" (and {len(page.divergences) - 1} more)" if len(page.divergences) > 1 else ""
            out(
                self.style.WARNING(
                    f"  replay diverged at {first.step_name} ({_time(first.created)}){more}: "
                    f"{self.short(first.error_message, 200)}"
                )
            )

    def show_step(self, number: int, row: TimelineRow) -> None:
        log, tries = row.log, row.tries
        style = {"completed": self.style.SUCCESS, "failed": self.style.ERROR}.get(
            log.state, self.style.WARNING
        )
        attempts = (
            f"{tries.attempts} over {tries.tries} tries (this try: {tries.current_attempts})"
            if tries is not None
            else str(log.attempts)
        )
        self.stdout.write(
            f"  {number:>3}. {log.step_name}  {style(log.state)}  attempts={attempts}  "
            f"started={_time(log.started_at)}  last={_time(log.last_executed_at)}  "
            f"completed={_time(log.completed_at)}  "
            f"took={_duration(log.started_at, log.completed_at)}"
        )
        if log.result is not None:
            self.stdout.write(f"       result: {self.short(log.result)}")
        # A completed step keeps the error of an earlier failed try on its row: history (listed
        # below with the other errors), not its current error.
        if log.error_class and log.state != ExecutionLog.STATE.completed:
            self.stdout.write(
                f"       error: {log.error_class}: {self.short(log.error_message, 120)}"
            )
        if log.metadata:
            self.stdout.write(f"       metadata: {self.short(log.metadata, 200)}")
        if is_failure_marker(row.step):
            cause = next(
                (card.error for card in row.errors if str(card.error.pk) == row.step.ref), None
            )
            self.stdout.write(
                self.style.ERROR(
                    f"       workflow failed: {cause.error_class}: "
                    f"{self.short(cause.error_message, 120)} "
                    f"(ErrorLog #{cause.pk})"
                    if cause
                    else f"       workflow failed: ErrorLog #{row.missing_error_id} (deleted)"
                )
            )
        if row.periodic is not None:
            self.show_repetitions(row.periodic)
        for card in row.errors:
            self.show_error(
                card.error,
                indent="       ",
                with_step=card.error.step_name != log.step_name,
                try_number=card.try_number,
            )

    def show_repetitions(self, task: PeriodicTask, shown: int = 5) -> None:
        """How many times a periodic task ran (the page's summary) and its newest runs."""
        log = task.log
        recent, more = queries.repetitions_page(log.workflow_id, task.name, "", shown)
        if not recent:
            return
        self.stdout.write(
            f"       {task.iterations_text} repetition(s)" + (f", last {shown}:" if more else ":")
        )
        for rep in reversed(recent):
            self.stdout.write(
                f"         {rep.step_name}  {rep.state}  attempts={rep.attempts}  "
                f"took={_duration(rep.started_at, rep.completed_at)}"
                + (f"  error={rep.error_class}" if rep.error_class else "")
            )

    def show_error(
        self, error: ErrorLog, indent: str, with_step: bool = True, try_number: int | None = None
    ) -> None:
        where = f"{error.step_name} " if error.step_name and with_step else ""
        attempt = f"attempt {error.attempt} " if error.attempt is not None else ""
        if attempt and try_number is not None:
            attempt = f"try {try_number}, {attempt}"
        self.stdout.write(
            self.style.ERROR(
                f"{indent}x {where}{attempt}{error.error_class}: "
                f"{self.short(error.error_message, 120)} "
                f"(ErrorLog #{error.pk}, {_time(error.created)})"
            )
        )
        if self.traceback and error.backtrace:
            for line in error.backtrace.rstrip().splitlines():
                self.stdout.write(f"{indent}  | {line}")

    # -- operations --------------------------------------------------------------------------------
    def handle_resume(self, key: str, job_class: str | None, **_: Any) -> None:
        self.operate(operations.resume, self.get_workflow(key, job_class))

    def handle_send(
        self,
        key: str,
        job_class: str | None,
        topic: str,
        payload: Any,
        idempotency_key: str | None,
        **_: Any,
    ) -> None:
        wf = self.get_workflow(key, job_class)
        repeat = (
            idempotency_key is not None
            and Message.objects.filter(workflow=wf, idempotency_key=idempotency_key).exists()
        )
        try:
            message = wf.send(topic, payload, idempotency_key=idempotency_key)
        except (TypeError, ValueError) as error:  # a topic, payload or key send refuses
            raise CommandError(f"{wf} {topic}: {error}") from error
        if repeat:
            self.stdout.write(
                f"{wf} already has message #{message.pk} with idempotency key "
                f"{idempotency_key!r}: nothing stored."
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Sent message #{message.pk} ({topic}) to {wf}."))

    def handle_retry(
        self, key: str, job_class: str | None, now: bool, force: bool = False, **_: Any
    ) -> None:
        self.operate(operations.retry, self.get_workflow(key, job_class), now=now, force=force)

    def operate(self, action: Any, workflow: Workflow, **options: Any) -> None:
        """Run one operator action; its refusal (why, and what to do instead) is the error."""
        try:
            message = action(workflow, **options)
        except ChronoForgeError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(self.style.SUCCESS(message))

    def handle_cancel(self, key: str, job_class: str | None, reason: str = "", **_: Any) -> None:
        wf = self.get_workflow(key, job_class)
        try:
            total = operations.cancel_workflow(wf, reason)
        except (TypeError, ValueError) as error:
            raise CommandError(f"--reason: {error}") from error
        children = f" and {total - 1} descendant run(s)" if total > 1 else ""
        running = " (its running pass stops before its next step)" if wf.locked_by else ""
        self.stdout.write(self.style.SUCCESS(f"Cancelled {wf}{children}{running}."))

    def handle_reap(self, stale_after: float | None, **_: Any) -> None:
        stale = (
            timedelta(minutes=stale_after) if stale_after is not None else conf.reap_stale_after()
        )
        count = operations.reap_all(stale)
        self.stdout.write(
            f"Re-enqueued {count} stranded workflow(s) (running with a lock older than {stale})."
        )

    def handle_resume_overdue(self, grace: float | None, **_: Any) -> None:
        grace_td = (
            timedelta(minutes=grace)
            if grace is not None
            else conf.as_timedelta(conf.get("RESUME_OVERDUE_GRACE"))
        )
        cancelled = operations.cancel_past_deadline()
        if cancelled:
            self.stdout.write(
                f"Cancelled {cancelled} workflow(s) past their deadline (reason: "
                f"{deadlines.DEADLINE_REASON})."
            )
        count = operations.resume_overdue_all(grace_td)
        self.stdout.write(
            f"Re-enqueued {count} overdue workflow(s) whose delivery was late by more than "
            f"{grace_td}."
        )

    def handle_cleanup(
        self,
        older_than: float,
        completed_older_than: float | None,
        failed_older_than: float | None,
        prune_repetitions_older_than: float | None,
        batch_size: int,
        dry_run: bool,
        no_progress: bool,
        **_: Any,
    ) -> None:
        bar = None if no_progress else ProgressBar(self.stderr, batch_size)
        counts = maintenance.cleanup(
            older_than_days=older_than,
            completed_older_than_days=completed_older_than,
            failed_older_than_days=failed_older_than,
            prune_repetitions_older_than_days=prune_repetitions_older_than,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=bar,
        )
        if bar:
            bar.close()
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {counts['workflows']} workflow(s), {counts['execution_logs']} execution "
            f"log(s), {counts['error_logs']} error log(s), {counts['repetition_logs']} "
            f"repetition log(s), {counts['messages']} message(s)."
        )

    def handle_graph(self, workflow_class: str, as_json: bool, **_: Any) -> None:

        path = workflow_class
        if "." not in path:
            known = sorted(
                set(
                    Workflow.objects.filter(job_class__endswith="." + path)
                    .values_list("job_class", flat=True)
                    .distinct()[:10]
                )
            )
            if len(known) != 1:
                raise CommandError(
                    f"Give the dotted path of {path!r} (e.g. myapp.workflows.{path})"
                    + (f"; it could be any of {', '.join(known)}." if known else ".")
                )
            path = known[0]
        cls = resolve_workflow_class(path)
        graph = as_dict(cls)
        if as_json:
            self.stdout.write(json.dumps(graph, indent=2))
            return
        self.stdout.write(f"{graph['class']}.perform: {len(graph['steps'])} durable step(s)")
        for number, step in enumerate(graph["steps"], 1):
            flags = [f for f in ("conditional", "in_loop") if step[f]] + step["notes"]
            where = f"{step['method']}:{step['line']}"
            extra = f"  ({'; '.join(flags)})" if flags else ""
            self.stdout.write(f"  {number:>3}. {step['step_name']:<40} {where}{extra}")
        for warning in graph["warnings"]:
            self.stdout.write(self.style.WARNING(f"  warning: {warning}"))

    def handle_status(self, **_: Any) -> None:

        report = health.snapshot()
        out = self.stdout.write
        now = report.checked_at
        if report.clusters is None:
            out(self.style.WARNING(f"Clusters: unknown ({report.clusters_note})"))
        else:
            style = self.style.SUCCESS if report.alive else self.style.ERROR
            out(style(f"Clusters: {report.alive} alive") + f" of {len(report.clusters)} seen")
            for cluster in report.clusters:
                uptime = _seconds(cluster.uptime) if cluster.uptime is not None else "-"
                out(
                    f"  {cluster.host} pid {cluster.pid}  {cluster.status}  "
                    f"{cluster.workers} worker(s)  up {uptime}"
                )
        if report.queue_depth is None:
            out(self.style.WARNING(f"Queue: unknown ({report.queue_note})"))
        else:
            out(f"Queue: {report.queue_depth} task(s) ready to run")
        if report.oldest_due is None:
            out("Oldest due delivery: none")
        else:
            late = _seconds((health.age(report.oldest_due, now) or timedelta(0)).total_seconds())
            out(f"Oldest due delivery: {_time(report.oldest_due)} (due {late} ago, not started)")
        out(
            "Workflows: "
            + ", ".join(
                f"{name} {report.show(name)}"
                for name in ("running", "stranded", "overdue", "parked", "blocked")
            )
        )
        if report.unhealthy:
            seen = "no live cluster" if report.clusters is not None else "no cluster can be seen"
            raise CommandError(
                f"{report.show('overdue')} overdue workflow(s) and {seen}: start "
                "`manage.py qcluster` (see `chrono_forge status` in docs/operations.md)."
            )
        self.stdout.write(self.style.SUCCESS("OK"))

    def handle_maintenance(self, install: bool, uninstall: bool, **_: Any) -> None:
        if uninstall:
            count = maintenance.uninstall_schedules()
            self.stdout.write(f"Removed {count} chrono_forge maintenance schedule(s).")
            return
        cluster = conf.get("MAINTENANCE_CLUSTER")
        for name, created in maintenance.install_schedules():
            self.stdout.write(
                f"{'Created' if created else 'Updated'} schedule {name}"
                + (f" (cluster {cluster})" if cluster else "")
            )
        self.stdout.write("Start `manage.py qcluster` (its scheduler runs them).")


class ProgressBar:
    """A one-line bar on stderr, drawn only for runs longer than one batch."""

    width = 30

    def __init__(self, stream, batch_size: int):
        self.stream = stream
        self.batch_size = batch_size
        self.drawn = False
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= self.batch_size and not self.drawn:
            return
        if self.drawn and stage != self.stage:
            self.stream.write("", style_func=lambda text: text)  # keep the finished stage's line
        self.stage = stage
        filled = self.width * done // total if total else self.width
        line = f"\r{stage:<12} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
        self.stream.write(line, ending="", style_func=lambda text: text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("", style_func=lambda text: text)
