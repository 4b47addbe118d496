"""Supporting changelists: ExecutionLog and ErrorLog (read-only)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from ..models import ErrorLog, ExecutionLog
from ..pages import formatting as fmt
from ..tries import tries_of
from .columns import time_column
from .filters import ErrorClassFilter, StepKindFilter
from .workflow import PrefixSearchMixin, ReadOnlyAdmin


def pretty_json(value) -> str:
    return format_html(
        '<pre class="cf-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str)
    )


def workflow_link(workflow) -> str:
    url = reverse("admin:chrono_forge_workflow_change", args=[workflow.pk])
    return format_html('<a href="{}">{}</a>', url, workflow)


@admin.register(ExecutionLog)
class ExecutionLogAdmin(PrefixSearchMixin, ReadOnlyAdmin):
    list_display = (
        "workflow_column",
        "kind",
        "step_name",
        "state",
        "attempts_column",
        "started",
        "completed",
    )
    list_filter = (StepKindFilter, "state")
    search_fields = ("^step_name",)
    search_help_text = "Step name prefix (case-sensitive), e.g. durably_execute$charge"
    prefix_search_field = "step_name"
    ordering = ("-id",)
    fields = (
        "workflow_column",
        "step_name",
        "state",
        "attempts_detail",
        "started_at",
        "last_executed_at",
        "completed_at",
        "current_error_class",
        "current_error_message",
        "result_json",
        "metadata_json",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("workflow")
            .defer("workflow__kwargs", "workflow__options", "workflow__context", "workflow__result")
        )

    def get_changelist_instance(self, request):
        # The page's rows, read once (the template iterates the same cached queryset): their
        # attempts over operator tries cost one query for the retry markers, one more only when
        # some rows belong to retried workflows.
        changelist = super().get_changelist_instance(request)
        logs = list(changelist.result_list)
        tries = tries_of(logs)
        for log in logs:
            log.cf_tries = tries.get(log.pk)
        return changelist

    @admin.display(description="workflow")
    def workflow_column(self, obj):
        return workflow_link(obj.workflow)

    @admin.display(description="attempts")
    def attempts_column(self, obj):
        """The row's attempts; over all its tries once operator retries reset it (read for the
        whole page in get_changelist_instance)."""
        tries = getattr(obj, "cf_tries", None)
        return obj.attempts if tries is None else f"{tries.attempts} over {tries.tries} tries"

    @admin.display(description="attempts")
    def attempts_detail(self, obj):
        tries = tries_of([obj]).get(obj.pk)
        if tries is None:
            return obj.attempts
        return f"{tries.attempts} over {tries.tries} tries (this try: {tries.current_attempts})"

    @admin.display(description="error class")
    def current_error_class(self, obj):
        return self._current_error(obj, obj.error_class)

    @admin.display(description="error message")
    def current_error_message(self, obj):
        return self._current_error(obj, obj.error_message)

    @staticmethod
    def _current_error(obj, value: str) -> str:
        # A completed step keeps the error of an earlier failed try on its row (an operator
        # retry does not clear it): history, listed under Errors, not its current error.
        if obj.state == ExecutionLog.STATE.completed and value:
            return "— (completed; its earlier failures are listed under Errors)"
        return value

    @admin.display(description="kind")
    def kind(self, obj):
        return fmt.parse_step_name(obj.step_name).label

    started = time_column("started_at", "started")
    completed = time_column("completed_at", "completed")

    @admin.display(description="result")
    def result_json(self, obj):
        return pretty_json(obj.result)

    @admin.display(description="metadata")
    def metadata_json(self, obj):
        return pretty_json(obj.metadata)


@admin.register(ErrorLog)
class ErrorLogAdmin(PrefixSearchMixin, ReadOnlyAdmin):
    list_display = (
        "created_column",
        "workflow_column",
        "short_class",
        "step_name",
        "attempt",
        "short_message",
    )
    list_filter = (ErrorClassFilter, ("created", admin.DateFieldListFilter))
    search_fields = ("^step_name",)
    search_help_text = "Step name prefix (case-sensitive); filter by class on the right"
    prefix_search_field = "step_name"
    ordering = ("-id",)
    fields = (
        "workflow_column",
        "created",
        "error_class",
        "step_name",
        "attempt",
        "error_message",
        "backtrace_block",
        "context_json",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = (
            super()
            .get_queryset(request)
            .select_related("workflow")
            .defer("workflow__kwargs", "workflow__options", "workflow__context", "workflow__result")
        )
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name and match.url_name.endswith("_changelist"):
            queryset = queryset.defer("backtrace", "context")
        return queryset

    @admin.display(description="workflow")
    def workflow_column(self, obj):
        return workflow_link(obj.workflow)

    created_column = time_column("created", "created")

    @admin.display(description="error class", ordering="error_class")
    def short_class(self, obj):
        return format_html(
            '<span title="{}">{}</span>', obj.error_class, fmt.short_class(obj.error_class)
        )

    @admin.display(description="message")
    def short_message(self, obj):
        # Cut to keep the row on a 1366 px screen; the whole message is the tooltip.
        return format_html(
            '<span title="{}">{}</span>', obj.error_message, fmt.truncate(obj.error_message, 80)
        )

    @admin.display(description="backtrace")
    def backtrace_block(self, obj):
        return format_html('<pre class="cf-trace">{}</pre>', obj.backtrace)

    @admin.display(description="context snapshot")
    def context_json(self, obj):
        return pretty_json(obj.context)
