"""``WorkflowAdmin``: the operators' main window. Read-only; state changes only through actions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from .. import conf, operations
from ..exceptions import ChronoForgeError
from ..formatting import human_duration
from ..liveness import is_stranded, overdue_grace
from ..models import Workflow
from ..pages import formatting as fmt
from ..pages import queries, workflow_page
from ..validation import REASON_MAX_LENGTH
from .columns import time_column
from .filters import (
    IsBranchChildFilter,
    JobClassFilter,
    LivenessFilter,
    StateFilter,
    StrandedFilter,
    WaitKindFilter,
)
from .paginator import BEFORE_VAR, CappedChangeList, CappedPaginator
from .views import HttpResponseSeeOther, WorkflowViews

DASH = mark_safe('<span class="cf-muted">—</span>')
#: Admin actions on selected rows handle at most this many (bulk work belongs to background tasks).
ACTION_CAP = 500
CHIP_STATES = ("idle", "running", "completed", "failed", "stalled", "cancelled")


class ReadOnlyAdmin(admin.ModelAdmin):
    """No add, change or delete: rows are written by the engine only."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facets count the whole table
    paginator = CappedPaginator
    list_per_page = 50
    list_max_show_all = 200

    class Media:
        css = {"all": ("chrono_forge/admin.css",)}

    def get_changelist(self, request, **kwargs):
        return CappedChangeList

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        # The "next" link's keyset: rows older than this id (ignored when it cannot be one).
        paginator.before = queries.parse_pk(request.GET.get(BEFORE_VAR), self.model)
        return paginator

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        # The page is titled by what it lists ("Steps"), as its tab and breadcrumb say, not
        # Django's "Select step to view" (nothing here is selected for editing).
        title = {"title": self.opts.verbose_name_plural.capitalize()}
        response = super().changelist_view(request, {**title, **(extra_context or {})})
        context = getattr(response, "context_data", None)
        if context and "cl" in context:  # "0 of 5001 selected" -> "0 of 5000+ selected"
            text = context["cl"].paginator.count_text
            context["selection_note"] = f"0 of {text} selected"
            context["selection_note_all"] = f"All {text} selected"
        return response


class PrefixSearchMixin:
    """Search = a case-sensitive prefix of one indexed column (``LIKE 'abc%'``; Django escapes ``%``
    and ``_``), never a substring scan."""

    prefix_search_field = "key"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(**{f"{self.prefix_search_field}__prefix": term}), False


def _report(request, done: int, skipped: int, verb: str, why: str) -> None:
    if done:
        messages.success(request, f"{verb} {done} workflow(s).")
    if skipped:
        messages.warning(request, f"Skipped {skipped} workflow(s): {why}.")
    if not done and not skipped:
        messages.info(request, "Nothing to do.")


@admin.register(Workflow)
class WorkflowAdmin(WorkflowViews, PrefixSearchMixin, ReadOnlyAdmin):
    list_display = (
        "class_name",
        "key",
        "state_badge",
        "duration",
        "started",
        "next_run",
        "updated",
    )
    list_display_links = ("key",)
    list_filter = (
        StateFilter,
        JobClassFilter,
        IsBranchChildFilter,
        StrandedFilter,
        LivenessFilter,
        WaitKindFilter,
        ("created", admin.DateFieldListFilter),
    )
    search_fields = ("^key",)
    search_help_text = "Key prefix (case-sensitive): abc finds abc-1, abc/2, …"
    ordering = ("-id",)
    fields = ("job_class", "key")
    change_list_template = "admin/chrono_forge/workflow/change_list.html"
    change_form_template = "admin/chrono_forge/workflow/change_form.html"
    actions = (
        "retry_selected",
        "resume_selected",
        "reap_selected",
        "cancel_selected",
        "force_unlock_selected",
    )

    # -- changelist -------------------------------------------------------------------------------
    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name and match.url_name.endswith("_changelist"):
            queryset = queryset.defer(
                "kwargs", "options", "context", "result"
            )  # big JSON the list never shows
        return queryset

    @admin.display(description="class", ordering="job_class")
    def class_name(self, obj):
        return format_html(
            '<span class="cf-class-name" title="{}">{}</span>',
            obj.job_class,
            fmt.short_class(obj.job_class),
        )

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        label, tone, tip = fmt.row_status(obj)
        return format_html('<span class="cf-pill cf-{}" title="{}">{}</span>', tone, tip, label)

    @admin.display(description="duration")
    def duration(self, obj):
        seconds = fmt.row_duration(obj)
        if seconds is None:
            return DASH
        # rose: stranded; amber: a live run past a minute; otherwise a quiet bar
        live_and_slow = obj.state == Workflow.STATE.running and seconds >= fmt.SLOW
        tone = "rose" if is_stranded(obj) else ("amber" if live_and_slow else "bar")
        width = fmt.meter_width(seconds, max(seconds, 3600))
        return format_html(
            '<span class="cf-meter"><span class="cf-meter-fill cf-{} cf-w-{}"></span></span> {}',
            tone,
            width,
            human_duration(seconds),
        )

    started = time_column("started_at", "started")
    next_run = time_column("next_run_at", "next run")
    updated = time_column("modified", "updated")

    def changelist_view(self, request, extra_context=None):
        chips = self.state_chips(request)
        extra = {
            "chips": chips,
            "perms_cf": self.action_permissions(request),
            # "Retry all blocked" is offered only when there is something blocked to retry.
            "any_blocked": any(c["value"] == "blocked" and c["count"] != "0" for c in chips),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def state_chips(self, request) -> list[dict]:
        """Capped counts per state; they follow the branch toggle and the class filter."""
        base = Workflow.objects.all()
        branch = request.GET.get(IsBranchChildFilter.parameter_name, IsBranchChildFilter.DEFAULT)
        if branch == "top":
            base = base.filter(parent_execution_log__isnull=True)
        elif branch == "child":
            base = base.filter(parent_execution_log__isnull=False)
        if request.GET.get("job_class"):
            base = base.filter(job_class=request.GET["job_class"])
        counts = {state: queries.capped_count(base.filter(state=state)) for state in CHIP_STATES}
        blocked = counts["failed"] + counts["stalled"]
        current = request.GET.get("state", "")
        params = request.GET.copy()
        params.pop("p", None)

        def chip(value, label, count, capped):
            query = params.copy()
            if value:
                query["state"] = value
            else:
                query.pop("state", None)
            return {
                "value": value,
                "label": label,
                "selected": current == value,
                "count": f"{queries.COUNT_CAP}+" if capped else str(count),
                "query": query.urlencode(),
                "tone": {"blocked": "rose", "failed": "rose", "stalled": "rose"}.get(value, ""),
            }

        return [
            chip("", "all", "", False),
            chip(
                "blocked",
                "blocked",
                blocked,
                counts["failed"] > queries.COUNT_CAP
                or counts["stalled"] > queries.COUNT_CAP
                or blocked > queries.COUNT_CAP,
            ),
            *(
                chip(state, state, counts[state], counts[state] > queries.COUNT_CAP)
                for state in CHIP_STATES
            ),
        ]

    # -- change page ------------------------------------------------------------------------------
    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["page"] = workflow_page.workflow_page(obj)
            context["perms_cf"] = self.action_permissions(request)
            context["status"] = dict(
                zip(("label", "tone", "tip"), fmt.row_status(obj), strict=True)
            )
            context["stale_after"] = human_duration(conf.reap_stale_after().total_seconds())
            context["grace"] = human_duration(overdue_grace().total_seconds())
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- actions on selected rows ------------------------------------------------------------------
    def _selected(self, queryset):
        return list(
            queryset.defer("kwargs", "options", "context", "result").order_by("-id")[:ACTION_CAP]
        )

    @admin.action(description="Retry selected failed/stalled workflows", permissions=["retry"])
    def retry_selected(self, request, queryset):
        done = skipped = 0
        for workflow in self._selected(queryset):
            try:
                workflow.retry_later()
                done += 1
            except ChronoForgeError:
                skipped += 1
        _report(
            request, done, skipped, "Retrying", "only failed or stalled workflows can be retried"
        )
        return HttpResponseSeeOther(request.get_full_path())

    @admin.action(description="Resume selected idle workflows", permissions=["resume"])
    def resume_selected(self, request, queryset):
        done = skipped = 0
        for workflow in self._selected(queryset):
            try:
                workflow.resume()
                done += 1
            except ChronoForgeError:
                skipped += 1
        _report(request, done, skipped, "Resumed", "only idle workflows can be resumed")
        return HttpResponseSeeOther(request.get_full_path())

    @admin.action(description="Reap selected stranded workflows", permissions=["reap"])
    def reap_selected(self, request, queryset):
        done = skipped = 0
        for workflow in self._selected(queryset):
            try:
                operations.reap(workflow)
                done += 1
            except ChronoForgeError:
                skipped += 1
        _report(
            request, done, skipped, "Reaping", "only stranded workflows (stale lock) can be reaped"
        )
        return HttpResponseSeeOther(request.get_full_path())

    @admin.action(
        description="Cancel selected workflows (and their branch children)…",
        permissions=["cancel"],
    )
    def cancel_selected(self, request, queryset):
        selected = self._selected(queryset)
        if request.POST.get("post") == "yes":
            reason = request.POST.get("reason", "").strip()
            try:
                total = operations.cancel_selected([w.pk for w in selected], reason)
            except (TypeError, ValueError) as error:
                messages.error(request, f"Nothing was cancelled: the reason {error}.")
                return HttpResponseSeeOther(request.get_full_path())
            if total:
                messages.success(request, f"Cancelled {total} workflow run(s), children included.")
            else:
                messages.info(request, "Nothing to do: the selected workflows had finished.")
            return HttpResponseSeeOther(request.get_full_path())
        return TemplateResponse(
            request,
            "admin/chrono_forge/workflow/cancel.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Cancel workflows?",
                "media": self.media,
                "workflows": selected,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "bulk": True,
                "form_action": "",
                "reason_max": REASON_MAX_LENGTH,
            },
        )

    @admin.action(
        description="Force-unlock selected running workflows…", permissions=["force_unlock"]
    )
    def force_unlock_selected(self, request, queryset):
        selected = self._selected(queryset)
        if request.POST.get("post") == "yes":
            done = skipped = 0
            for workflow in selected:
                try:
                    operations.force_unlock(workflow)
                    done += 1
                except ChronoForgeError:
                    skipped += 1
            _report(
                request, done, skipped, "Unlocked", "only running workflows can be force-unlocked"
            )
            return HttpResponseSeeOther(request.get_full_path())
        return TemplateResponse(
            request,
            "admin/chrono_forge/workflow/force_unlock.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Force unlock?",
                "media": self.media,
                "workflows": selected,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "bulk": True,
                "form_action": "",
                "running": [w for w in selected if w.state == Workflow.STATE.running],
            },
        )
