"""The custom admin pages and the state-changing views of ``WorkflowAdmin`` (a mixin).

Every view is wrapped in ``admin_site.admin_view`` (staff login + CSRF) and checks its permission
(an action: the model's view permission and the action's own).
State changes are POST-only and answer with a 303 redirect and a message; a refusal (wrong state,
class gone, nothing to do) is a message, never a 500.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as urlquote

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from .. import clock, conf, dispatch, health, maintenance, operations
from ..exceptions import ChronoForgeError
from ..liveness import is_stranded
from ..models import ExecutionLog, Workflow
from ..operations import blocked_queryset
from ..pages import formatting as fmt
from ..pages import lists, queries
from ..payloads import json_pk
from ..validation import REASON_MAX_LENGTH, validate_reason

PAGE_SIZE = 50
OVERVIEW_CACHE_SECONDS = 5

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
            branch = queries.step_log(request.GET.get("branch_log_id"))
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
            data = {**lists.overview(), "health": health.snapshot()}
            cache.set(key, data, OVERVIEW_CACHE_SECONDS)
        return self._render(request, "overview.html", "Workflows overview", **data)

    def stranded_view(self, request):
        """Every stranded workflow, a page at a time, with a capped total."""
        self._require_view(request)
        after = queries.parse_pk(request.GET.get("after"), Workflow)
        return self._render(
            request,
            "stranded.html",
            "Stranded workflows",
            **lists.stranded(after, PAGE_SIZE, clock.now()),
            first_url="?" if after is not None else None,
        )

    def overdue_view(self, request):
        """Exactly the rows ``resume-overdue`` would pick, with why each is late."""
        self._require_view(request)
        return self._render(
            request, "overdue.html", "Overdue workflows", **lists.overdue(clock.now())
        )

    def waiting_view(self, request):
        """Every idle workflow waiting on an event or a condition, a page at a time, and the
        figures above the table over all of them."""
        self._require_view(request)
        after = queries.parse_pk(request.GET.get("after"), Workflow)
        return self._render(
            request,
            "waiting.html",
            "Waiting workflows",
            **lists.waiting(after, PAGE_SIZE, clock.now(), long_wait_threshold()),
            first_url="?" if after is not None else None,
        )

    def repetitions_view(self, request, object_id):
        self._require_view(request)
        workflow = self._workflow_or_404(request, object_id)
        name = request.GET.get("step", "")
        coordination = queries.coordination_log(workflow.pk, name)
        if coordination is None:
            raise Http404("No such periodic task")
        before = request.GET.get("before", "")
        return self._render(
            request,
            "repetitions.html",
            f"Repetitions of {name}",
            **lists.repetitions(workflow, coordination, before, PAGE_SIZE),
            newest_url=f"?step={urlquote(name)}" if before.isdigit() else None,
        )

    def branch_children_view(self, request, object_id, log_id):
        self._require_view(request)
        workflow = self._workflow_or_404(request, object_id)
        log = queries.workflow_step_log(workflow.pk, log_id)
        if log is None or fmt.parse_step_name(log.step_name).kind != "branch":
            raise Http404("No such branch")
        before = queries.parse_pk(request.GET.get("before"), Workflow)
        page = lists.branch_children(
            workflow, log, request.GET.get("state") or "", before, PAGE_SIZE, clock.now()
        )
        return self._render(
            request,
            "branch_children.html",
            f"Branch {page['branch'].name}",
            **page,
            newest_url=f"?state={page['state']}" if before is not None else None,
        )
