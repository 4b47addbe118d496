"""Supporting changelists: ExecutionLog and ErrorLog (read-only)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from ..models import ErrorLog, ExecutionLog
from ..templatetags.chrono_forge_admin import cf_ago
from . import presenters as p
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
        "attempts",
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
        "attempts",
        "started_at",
        "last_executed_at",
        "completed_at",
        "error_class",
        "error_message",
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

    @admin.display(description="workflow")
    def workflow_column(self, obj):
        return workflow_link(obj.workflow)

    @admin.display(description="kind")
    def kind(self, obj):
        return p.parse_step_name(obj.step_name).label

    @admin.display(description="started", ordering="started_at")
    def started(self, obj):
        return cf_ago(obj.started_at, "short")

    @admin.display(description="completed", ordering="completed_at")
    def completed(self, obj):
        return cf_ago(obj.completed_at, "short")

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

    @admin.display(description="created", ordering="created")
    def created_column(self, obj):
        return cf_ago(obj.created, "short")

    @admin.display(description="error class", ordering="error_class")
    def short_class(self, obj):
        return format_html(
            '<span title="{}">{}</span>', obj.error_class, p.short_class(obj.error_class)
        )

    @admin.display(description="message")
    def short_message(self, obj):
        # Cut to keep the row on a 1366 px screen; the whole message is the tooltip.
        return format_html(
            '<span title="{}">{}</span>', obj.error_message, p.truncate(obj.error_message, 80)
        )

    @admin.display(description="backtrace")
    def backtrace_block(self, obj):
        return format_html('<pre class="cf-trace">{}</pre>', obj.backtrace)

    @admin.display(description="context snapshot")
    def context_json(self, obj):
        return pretty_json(obj.context)
