"""The custom admin pages and the state-changing views of ``WorkflowAdmin`` (a mixin).

Every view is wrapped in ``admin_site.admin_view`` (staff login + CSRF) and checks its permission
(an action: the model's view permission and the action's own).
State changes are POST-only and answer with a 303 redirect and a message; a refusal (wrong state,
class gone, nothing to do) is a message, never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as urlquote

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from .. import clock, conf, dispatch, health, maintenance, operations
from ..exceptions import ChronoForgeError
from ..formatting import human_duration
from ..liveness import is_stranded, liveness, overdue_grace, pending_merges
from ..models import ExecutionLog, Workflow
from ..operations import blocked_queryset
from ..pages import formatting as fmt
from ..pages import queries, workflow_page
from ..validation import REASON_MAX_LENGTH, validate_reason
from .filters import filter_state

PAGE_SIZE = 50
OVERVIEW_CACHE_SECONDS = 5
#: The Overview's counts by state stop here (shown as "100,000+").
OVERVIEW_COUNT_CAP = 100_000
#: The Overview's per-class table covers the newest this many workflows.
OVERVIEW_WINDOW = 10_000

PERMS = {
    "retry": "chrono_forge.retry_workflow",
    "resume": "chrono_forge.resume_workflow",
    "reap": "chrono_forge.reap_workflow",
    "force_unlock": "chrono_forge.force_unlock_workflow",
    "bulk_retry": "chrono_forge.bulk_retry_workflows",
    "cancel": "chrono_forge.cancel_workflow",
}


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def long_wait_threshold() -> timedelta:
    return conf.as_timedelta(conf.get("ADMIN_LONG_WAIT_THRESHOLD"))


def json_pk(value):
    """A primary key as a JSON-friendly task argument (UUIDs travel as text)."""
    return value if value is None or isinstance(value, int) else str(value)


if TYPE_CHECKING:  # a mixin: typed as the ModelAdmin it is mixed into (WorkflowAdmin)
    from django.contrib.admin import ModelAdmin

    _AdminBase = ModelAdmin[Workflow]
else:
    _AdminBase = object


class WorkflowViews(_AdminBase):
    """Custom URLs of WorkflowAdmin: pages (overview, stranded, waiting, repetitions, branch
    children) and actions (retry, resume, reap, force unlock, bulk retry, reap all)."""

    # -- permissions (used by @admin.action(permissions=[...]) too) -------------------------------
    def may(self, request, action: str) -> bool:
        """An action needs the model's view permission as well as its own: an operator who may not
        see workflows may not change them either, through any URL."""
        return self.has_view_permission(request) and request.user.has_perm(PERMS[action])

    def has_retry_permission(self, request) -> bool:
        return self.may(request, "retry")

    def has_resume_permission(self, request) -> bool:
        return self.may(request, "resume")

    def has_reap_permission(self, request) -> bool:
        return self.may(request, "reap")

    def has_force_unlock_permission(self, request) -> bool:
        return self.may(request, "force_unlock")

    def has_bulk_retry_permission(self, request) -> bool:
        return self.may(request, "bulk_retry")

    def has_cancel_permission(self, request) -> bool:
        return self.may(request, "cancel")

    def action_permissions(self, request) -> dict[str, bool]:
        return {name: self.may(request, name) for name in PERMS}

    # -- urls -------------------------------------------------------------------------------------
    def get_urls(self):
        wrap = self.admin_site.admin_view
        name = "chrono_forge_workflow_{}".format
        custom = [
            path("overview/", wrap(self.overview_view), name=name("overview")),
            path("stranded/", wrap(self.stranded_view), name=name("stranded")),
            path("overdue/", wrap(self.overdue_view), name=name("overdue")),
            path(
                "resume-overdue/",
                wrap(self.resume_overdue_all_view),
                name=name("resume_overdue_all"),
            ),
            path("waiting/", wrap(self.waiting_view), name=name("waiting")),
            path("bulk-retry/", wrap(self.bulk_retry_view), name=name("bulk_retry")),
            path("reap-all/", wrap(self.reap_all_view), name=name("reap_all")),
            path("cancel-branch/", wrap(self.cancel_branch_view), name=name("cancel_branch")),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=name("cancel")),
            path("<path:object_id>/retry/", wrap(self.retry_view), name=name("retry")),
            path("<path:object_id>/resume/", wrap(self.resume_view), name=name("resume")),
            path("<path:object_id>/reap/", wrap(self.reap_view), name=name("reap")),
            path("<path:object_id>/redeliver/", wrap(self.redeliver_view), name=name("redeliver")),
            path(
                "<path:object_id>/unlock/", wrap(self.force_unlock_view), name=name("force_unlock")
            ),
            path(
                "<path:object_id>/repetitions/",
                wrap(self.repetitions_view),
                name=name("repetitions"),
            ),
            path(
                "<path:object_id>/branches/<str:log_id>/",
                wrap(self.branch_children_view),
                name=name("branch"),
            ),
        ]
        return custom + super().get_urls()

    # -- helpers ----------------------------------------------------------------------------------
    def _require_view(self, request) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def _render(self, request, template: str, title: str, **context: Any) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "media": self.media,
            "perms_cf": self.action_permissions(request),
            "now": clock.now(),
            "page_size": PAGE_SIZE,
            **context,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, f"admin/chrono_forge/workflow/{template}", context)

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:chrono_forge_workflow_{name}", args=args)

    def _back(self, request, default: str) -> HttpResponseSeeOther:
        target = request.POST.get("next") or ""
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = default
        return HttpResponseSeeOther(target)

    def _workflow_or_404(self, request, object_id) -> Workflow:
        workflow = self.get_object(request, unquote(object_id))
        if workflow is None:
            raise Http404("No such workflow")
        return workflow

    def _act(self, request, object_id, perm: str, act) -> HttpResponse:
        """POST-only, permission-checked, one workflow; ``act(workflow)`` returns the success
        message or raises ChronoForgeError (shown as an error message)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.may(request, perm):
            raise PermissionDenied
        workflow = self.get_object(request, unquote(object_id))
        changelist = self._url("changelist")
        if workflow is None:
            messages.error(request, "That workflow does not exist (any more).")
            return HttpResponseSeeOther(changelist)
        try:
            messages.success(request, act(workflow))
        except ChronoForgeError as error:
            messages.error(request, str(error))
        return self._back(request, self._url("change", workflow.pk))

    # -- single-workflow actions -------------------------------------------------------------------
    def retry_view(self, request, object_id):
        # A cancelled run is retried only when the form says so on purpose.
        forced = request.POST.get("resume_cancelled") == "yes"

        return self._act(
            request, object_id, "retry", lambda workflow: operations.retry(workflow, force=forced)
        )

    def resume_view(self, request, object_id):
        return self._act(request, object_id, "resume", operations.resume)

    def reap_view(self, request, object_id):
        return self._act(request, object_id, "reap", operations.reap)

    def redeliver_view(self, request, object_id):
        return self._act(request, object_id, "resume", operations.redeliver)

    def force_unlock_view(self, request, object_id):
        if request.method == "POST":
            return self._act(request, object_id, "force_unlock", operations.force_unlock)
        if not self.has_force_unlock_permission(request):
            raise PermissionDenied
        workflow = self._workflow_or_404(request, object_id)
        return self._render(
            request,
            "force_unlock.html",
            "Force unlock?",
            workflows=[workflow],
            form_action=self._url("force_unlock", workflow.pk),
            stranded=is_stranded(workflow),
        )

    def cancel_view(self, request, object_id):
        """GET: the confirmation page (with a reason field); POST: cancel the run and its
        branch children."""
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        workflow = self._workflow_or_404(request, object_id)
        if request.method != "POST":
            return self._render(
                request,
                "cancel.html",
                "Cancel workflow?",
                workflows=[workflow],
                form_action=self._url("cancel", workflow.pk),
                reason_max=REASON_MAX_LENGTH,
            )
        reason = request.POST.get("reason", "").strip()

        def act(workflow):
            try:
                total = operations.cancel_workflow(workflow, reason)
            except (TypeError, ValueError) as error:
                raise ChronoForgeError(f"Nothing was cancelled: the reason {error}") from None
            children = f" with {total - 1} descendant run(s)" if total > 1 else ""
            return f"{workflow} was cancelled{children}."

        return self._act(request, object_id, "cancel", act)

    def cancel_branch_view(self, request):
        """GET: the confirmation page; POST: cancel every unfinished child of one branch (and
        their descendants) in a background task."""
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            branch_log_id = queries.parse_pk(request.GET.get("branch_log_id"), ExecutionLog)
            branch = (
                ExecutionLog.objects.filter(pk=branch_log_id)
                .only("id", "workflow_id", "step_name")
                .first()
                if branch_log_id is not None
                else None
            )
            if branch is None:
                raise Http404("No such branch")
            back = self._url("branch", branch.workflow_id, branch.pk)
            return self._render(
                request,
                "cancel.html",
                "Cancel the children of a branch?",
                branch=branch,
                count=queries.show_count(
                    queries.capped_count(operations.cancellable_children(branch.pk))
                ),
                form_action=self._url("cancel_branch"),
                next=back,
                reason_max=REASON_MAX_LENGTH,
            )
        branch_log_id = json_pk(queries.parse_pk(request.POST.get("branch_log_id"), ExecutionLog))
        reason = request.POST.get("reason", "").strip()
        try:
            validate_reason(reason)
        except (TypeError, ValueError) as error:
            messages.error(request, f"Nothing was cancelled: the reason {error}.")
            return self._back(request, self._url("changelist"))
        count = (
            queries.capped_count(operations.cancellable_children(branch_log_id))
            if branch_log_id is not None
            else 0
        )
        if not count:
            messages.info(request, "No unfinished children to cancel.")
        else:
            dispatch.enqueue_call(
                "chrono_forge.operations.cancel_branch",
                branch_log_id,
                reason,
                cluster=conf.get("MAINTENANCE_CLUSTER"),
            )
            messages.success(
                request,
                f"Cancelling {queries.show_count(count)} child workflow(s) in the background.",
            )
        return self._back(request, self._url("changelist"))

    # -- bulk actions (one background task each) ---------------------------------------------------
    def bulk_retry_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_bulk_retry_permission(request):
            raise PermissionDenied
        branch_log_id = json_pk(queries.parse_pk(request.POST.get("branch_log_id"), ExecutionLog))
        count = queries.capped_count(blocked_queryset(branch_log_id))
        if not count:
            messages.info(request, "No blocked workflows to retry.")
        else:
            kwargs = {"branch_log_id": branch_log_id} if branch_log_id is not None else {}
            dispatch.enqueue_call(
                "chrono_forge.operations.bulk_retry_blocked",
                cluster=conf.get("MAINTENANCE_CLUSTER"),
                **kwargs,
            )
            messages.success(
                request,
                f"Retrying {queries.show_count(count)} blocked workflow(s) in the background.",
            )
        return self._back(request, self._url("changelist"))

    def reap_all_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_reap_permission(request):
            raise PermissionDenied
        count = queries.capped_count(Workflow.objects.stranded())
        if not count:
            messages.info(request, "No stranded workflows to reap.")
        else:
            dispatch.enqueue_call(
                "chrono_forge.operations.reap_all", cluster=conf.get("MAINTENANCE_CLUSTER")
            )
            messages.success(
                request,
                f"Reaping {queries.show_count(count)} stranded workflow(s) in the background.",
            )
        return self._back(request, self._url("stranded"))

    def resume_overdue_all_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_resume_permission(request):
            raise PermissionDenied
        count = queries.capped_count(Workflow.objects.overdue())
        if not count:
            messages.info(request, "No overdue workflows.")
        else:
            maintenance.enqueue("resume-overdue")
            messages.success(
                request,
                f"Re-sending {queries.show_count(count)} overdue delivery(ies) in the background.",
            )
        return self._back(request, self._url("overdue"))

    # -- pages -------------------------------------------------------------------------------------
    def overview_view(self, request):
        self._require_view(request)
        key = "chrono_forge:admin:overview"
        data = cache.get(key)
        if data is None:
            data = {**overview_data(), "health": health.snapshot()}
            cache.set(key, data, OVERVIEW_CACHE_SECONDS)
        return self._render(request, "overview.html", "Workflows overview", **data)

    def stranded_view(self, request):
        """Every stranded workflow, a page at a time (keyset on the id: page N costs what page 1
        does), with a capped total."""
        self._require_view(request)
        now = clock.now()
        stranded = Workflow.objects.stranded()
        after = queries.parse_pk(request.GET.get("after"), Workflow)
        page = stranded.defer("kwargs", "options", "context", "result").order_by("id")
        if after is not None:
            page = page.filter(pk__gt=after)
        rows = list(page[: PAGE_SIZE + 1])
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        total = queries.capped_count(stranded)
        ages = [fmt.seconds_between(row.locked_at, now) or 0 for row in rows]
        longest = max(ages, default=0)
        items = [
            {"workflow": row, "age": human_duration(age), "meter": fmt.meter_width(age, longest)}
            for row, age in zip(rows, ages, strict=True)
        ]
        return self._render(
            request,
            "stranded.html",
            "Stranded workflows",
            items=items,
            total=total,
            total_text=queries.show_count(total),
            next_cursor=rows[-1].pk if more and rows else None,
            first_url="?" if after is not None else None,
            stale_after=human_duration(conf.reap_stale_after().total_seconds()),
        )

    def overdue_view(self, request):
        """Exactly the rows ``resume-overdue`` would pick, with why each is late."""
        self._require_view(request)
        now = clock.now()
        rows = list(
            Workflow.objects.overdue()
            .defer("kwargs", "options", "context", "result")
            .order_by(F("next_run_at").asc(nulls_first=True), "id")[: queries.SCAN_CAP + 1]
        )
        capped = len(rows) > queries.SCAN_CAP
        rows = rows[: queries.SCAN_CAP]
        merging = pending_merges(row.pk for row in rows)
        items = []
        for row in rows:
            reason = liveness(row, merge_pending=row.pk in merging, now=now)
            late = fmt.seconds_between(reason.at if reason else None, now) or 0
            items.append({"workflow": row, "reason": reason, "late": human_duration(late)})
        return self._render(
            request,
            "overdue.html",
            "Overdue workflows",
            items=items,
            capped=capped,
            cap=queries.SCAN_CAP,
            grace=human_duration(overdue_grace().total_seconds()),
        )

    def waiting_view(self, request):
        """Every idle workflow waiting on an event or a condition, a page at a time (keyset on the
        id), and the figures above the table (stalled event waits, the oldest per class) from
        bounded queries over all of them, not from the page."""
        self._require_view(request)
        now = clock.now()
        threshold = long_wait_threshold().total_seconds()
        after = queries.parse_pk(request.GET.get("after"), Workflow)
        page = (
            Workflow.objects.filter(state=Workflow.STATE.idle)
            .filter(queries.has_pending_wait())
            .defer("kwargs", "options", "context", "result")
            .order_by("id")
        )
        if after is not None:
            page = page.filter(pk__gt=after)
        idle = list(page[: PAGE_SIZE + 1])
        more = len(idle) > PAGE_SIZE
        idle = idle[:PAGE_SIZE]
        waits = queries.latest_pending_waits(row.pk for row in idle)
        items = []
        for row in idle:
            wait = waits.get(row.pk)
            if wait is None:
                continue
            items.append(self._wait_item(row, wait, now, threshold))
        # Event waits over the threshold first (they never resume on their own), then the oldest.
        items.sort(
            key=lambda item: (not (item["over"] and item["wait"].waits_for_event), -item["age"])
        )
        stalled = queries.capped_count(
            queries.event_waits().filter(started_at__lt=now - long_wait_threshold())
        )
        oldest_by_class = [
            self._wait_item(log.workflow, queries.wait_info(log), now, threshold)
            for log in queries.oldest_event_wait_per_class()
        ]
        oldest_by_class.sort(key=lambda i: -i["age"])
        return self._render(
            request,
            "waiting.html",
            "Waiting workflows",
            items=items,
            threshold=human_duration(threshold),
            stalled_events=stalled,
            stalled_events_text=queries.show_count(stalled),
            oldest_stalled=oldest_by_class[0] if stalled and oldest_by_class else None,
            oldest_by_class=oldest_by_class,
            next_cursor=idle[-1].pk if more and idle else None,
            first_url="?" if after is not None else None,
        )

    @staticmethod
    def _wait_item(row: Workflow, wait, now, threshold: float) -> dict:
        age = wait.age(now) or 0
        over = age > threshold
        return {
            "workflow": row,
            "wait": wait,
            "age": age,
            "age_text": human_duration(age),
            "over": over,
            "meter": fmt.bucket(100 * age / threshold) if threshold else 100,
            "tone": ("rose" if wait.waits_for_event else "amber") if over else "sky",
        }

    def repetitions_view(self, request, object_id):
        self._require_view(request)
        workflow = self._workflow_or_404(request, object_id)
        name = request.GET.get("step", "")
        coordination = ExecutionLog.objects.filter(
            workflow_id=workflow.pk, step_name=f"durably_repeat${name}"
        ).one()
        if coordination is None:
            raise Http404("No such periodic task")
        summary = workflow_page.periodic_task(workflow.pk, coordination)
        queryset = queries.repetitions_queryset(workflow.pk, name).defer("result")
        # Keyset on the step name: its unix-seconds suffix sorts by schedule, and the range is a
        # scan of the (workflow, step_name) unique index.
        before = request.GET.get("before", "")
        if before.isdigit():
            queryset = queryset.filter(step_name__lt=f"{queries.repetition_prefix(name)}{before}")
        rows = list(queryset.order_by("-step_name")[: PAGE_SIZE + 1])
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        items = []
        lates = []
        for row in rows:
            metadata = row.metadata if isinstance(row.metadata, dict) else {}
            scheduled = fmt.parse_time(metadata.get("scheduled_for"))
            step = fmt.parse_step_name(row.step_name)
            if scheduled is None and step.number is not None:
                scheduled = datetime.fromtimestamp(step.number, tz=UTC)
            status, tone = workflow_page.repetition_status(row)
            catch_up = bool(metadata.get("fast_forwarded"))
            late = None if catch_up else fmt.seconds_between(scheduled, row.started_at)
            if late is None and not catch_up and row.started_at and scheduled:
                late = 0.0  # started early or on time
            end = row.completed_at or (
                row.modified if row.state != ExecutionLog.STATE.pending else None
            )
            duration = None if catch_up else fmt.seconds_between(row.started_at, end)
            attempts, attempts_tone = (
                ("", "")
                if catch_up
                else fmt.attempts_in_words(
                    "durably_execute", row.attempts, row.state == ExecutionLog.STATE.failed
                )
            )
            lates.append(late or 0)
            items.append(
                {
                    "log": row,
                    "scheduled": scheduled,
                    "status": status,
                    "tone": tone,
                    "late": late,
                    "late_text": human_duration(late) if late else "on time",
                    "duration": human_duration(duration),
                    "attempts": attempts,
                    "attempts_tone": attempts_tone,
                    "catch_up": catch_up,
                    "metadata": metadata,
                }
            )
        longest = max(lates, default=0)
        for item in items:
            item["late_meter"] = fmt.meter_width(item["late"], longest)
            item["late_slow"] = bool(item["late"] and item["late"] >= fmt.SLOW)
        return self._render(
            request,
            "repetitions.html",
            f"Repetitions of {name}",
            workflow=workflow,
            summary=summary,
            items=items,
            step=name,
            next_cursor=rows[-1].step_name.rpartition("$")[2] if more and rows else None,
            newest_url=f"?step={urlquote(name)}" if before.isdigit() else None,
        )

    def branch_children_view(self, request, object_id, log_id):
        self._require_view(request)
        workflow = self._workflow_or_404(request, object_id)
        log_pk = queries.parse_pk(log_id, ExecutionLog)
        log = (
            ExecutionLog.objects.filter(pk=log_pk, workflow_id=workflow.pk).first()
            if log_pk
            else None
        )
        if log is None or fmt.parse_step_name(log.step_name).kind != "branch":
            raise Http404("No such branch")
        panel = workflow_page.branch_panel(log, {}, clock.now())
        children = Workflow.objects.filter(parent_execution_log_id=log.pk)
        chips = []
        for value, label in (("blocked", "blocked"), *((s, s) for s in fmt.STATES), ("all", "all")):
            count = queries.capped_count(filter_state(children, value)) if value != "all" else None
            chips.append(
                {
                    "value": value,
                    "label": label,
                    "count": queries.show_count(count) if count is not None else "",
                }
            )
        # Blocked children first when there are some (what an operator comes for); otherwise all
        # of them, not an empty "blocked" list.
        state = request.GET.get("state") or ("blocked" if chips[0]["count"] != "0" else "all")
        for chip in chips:
            chip["selected"] = chip["value"] == state
        queryset = filter_state(children, state).defer("kwargs", "options", "context", "result")
        before = queries.parse_pk(request.GET.get("before"), Workflow)
        if before is not None:
            queryset = queryset.filter(pk__lt=before)
        rows = list(queryset.order_by("-id")[: PAGE_SIZE + 1])
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return self._render(
            request,
            "branch_children.html",
            f"Branch {panel.name}",
            workflow=workflow,
            branch=panel,
            rows=[workflow_row(row) for row in rows],
            chips=chips,
            state=state,
            next_cursor=rows[-1].pk if more and rows else None,
            newest_url=f"?state={state}" if before is not None else None,
        )


def workflow_row(row: Workflow) -> dict:
    label, tone, tip = fmt.row_status(row)
    return {
        "workflow": row,
        "label": label,
        "tone": tone,
        "tip": tip,
        "duration": human_duration(fmt.row_duration(row)),
        "class": fmt.short_class(row.job_class),
    }


def overview_data() -> dict:
    """Counts by state, each capped at OVERVIEW_COUNT_CAP (one ``COUNT`` over a ``LIMIT``
    subquery per state, served by the (state, completed_at) index), and per class over the newest
    OVERVIEW_WINDOW workflows (a ``GROUP BY`` over a primary-key range): no query reads the whole
    table (the page caches the result 5 s)."""
    totals = {
        state: queries.capped_count(Workflow.objects.filter(state=state), OVERVIEW_COUNT_CAP)
        for state in fmt.STATES
    }
    floor = list(
        Workflow.objects.order_by("-id").values_list("id", flat=True)[
            OVERVIEW_WINDOW - 1 : OVERVIEW_WINDOW
        ]
    )
    window = Workflow.objects.filter(pk__gte=floor[0]) if floor else Workflow.objects.all()
    grouped = window.order_by().values("job_class", "state").annotate(n=Count("id"))
    per_class: dict[str, dict[str, int]] = {}
    class_totals = {state: 0 for state in fmt.STATES}
    for row in grouped:
        per_class.setdefault(row["job_class"], {state: 0 for state in fmt.STATES})[row["state"]] = (
            row["n"]
        )
        class_totals[row["state"]] = class_totals.get(row["state"], 0) + row["n"]
    processed_total = class_totals["completed"]
    classes: list[dict[str, Any]] = []
    for job_class, counts in per_class.items():
        processed = counts["completed"]
        share = 100 * processed / processed_total if processed_total else 0
        classes.append(
            {
                "job_class": job_class,
                "name": fmt.short_class(job_class),
                "processed": processed,
                "in_flight": counts["idle"] + counts["running"],
                "blocked": counts["failed"] + counts["stalled"],
                "share": share,
                "share_text": (
                    "<0.01%" if 0 < share < 0.01 else f"{share:.2f}%".replace(".00%", "%")
                ),
                "share_width": fmt.bucket(share),
            }
        )
    classes.sort(key=lambda c: (-c["processed"], c["job_class"]))

    def text(*states: str) -> str:
        capped = any(totals[state] > OVERVIEW_COUNT_CAP for state in states)
        return f"{sum(totals[state] for state in states):,}{'+' if capped else ''}"

    return {
        "processed": totals["completed"],
        "in_flight": totals["idle"] + totals["running"],
        "blocked": totals["failed"] + totals["stalled"],
        "processed_text": text("completed"),
        "in_flight_text": text("idle", "running"),
        "blocked_text": text("failed", "stalled"),
        "cancelled": totals["cancelled"],
        "cancelled_text": text("cancelled"),
        "totals": totals,
        "classes": classes,
        "window": OVERVIEW_WINDOW if floor else None,
    }
