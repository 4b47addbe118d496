"""Changelist filters. None of them counts anything (``show_facets`` is off on every admin)."""

from __future__ import annotations

from django.contrib import admin
from django.core.cache import cache
from django.db.models.lookups import Exact

from ..models import ErrorLog, Workflow
from ..pages.formatting import KIND_LABELS, short_class
from ..pages.queries import EVENT_WAIT, POLL_WAIT, filter_state, has_pending_wait
from ..step_names import KindPrefix, kind_prefix

#: Distinct job/error classes are read once a minute at most (they are a scan of an index).
DISTINCT_CACHE_SECONDS = 60
DISTINCT_LIMIT = 200

STATE_CHOICES = (
    ("blocked", "blocked (failed + stalled)"),
    ("in_flight", "in flight (idle + running)"),
    ("idle", "idle"),
    ("running", "running"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("stalled", "stalled"),
    ("cancelled", "cancelled"),
)


def cached_distinct(model, column: str) -> list[str]:
    key = f"chrono_forge:admin:distinct:{model._meta.label_lower}:{column}"
    values = cache.get(key)
    if values is None:
        values = list(
            model.objects.order_by(column)
            .values_list(column, flat=True)
            .distinct()[:DISTINCT_LIMIT]
        )
        cache.set(key, values, DISTINCT_CACHE_SECONDS)
    return values


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return STATE_CHOICES

    def queryset(self, request, queryset):
        return filter_state(queryset, self.value())


class JobClassFilter(admin.SimpleListFilter):
    title = "class"
    parameter_name = "job_class"

    def lookups(self, request, model_admin):
        classes = cached_distinct(Workflow, "job_class")
        if self.value() and self.value() not in classes:
            classes = [self.value(), *classes]
        return [(c, short_class(c)) for c in classes]

    def queryset(self, request, queryset):
        return queryset.filter(job_class=self.value()) if self.value() else queryset


class IsBranchChildFilter(admin.SimpleListFilter):
    """Branch children are hidden unless asked for: a fan-out of 100k children must not bury the
    workflows that spawned them."""

    title = "branch children"
    parameter_name = "branch"
    DEFAULT = "top"

    def lookups(self, request, model_admin):
        return (("top", "top-level only"), ("child", "branch children only"), ("all", "all"))

    def value(self):
        return super().value() or self.DEFAULT

    def queryset(self, request, queryset):
        if self.value() == "top":
            return queryset.filter(parent_execution_log__isnull=True)
        if self.value() == "child":
            return queryset.filter(parent_execution_log__isnull=False)
        return queryset

    def choices(self, changelist):
        # No "All" entry meaning "no parameter": no parameter means the default, top-level only.
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class StrandedFilter(admin.SimpleListFilter):
    title = "stranded"
    parameter_name = "stranded"

    def lookups(self, request, model_admin):
        return (("yes", "stranded (stale lock)"),)

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(pk__in=Workflow.objects.stranded().values("pk"))
        return queryset


class LivenessFilter(admin.SimpleListFilter):
    """The unfinished states an operator looks for: late deliveries, event parks, first passes."""

    title = "liveness"
    parameter_name = "liveness"

    def lookups(self, request, model_admin):
        return (
            ("overdue", "overdue (late past the grace)"),
            ("never_started", "first pass not started"),
            ("parked", "parked on an event"),
        )

    def queryset(self, request, queryset):
        rows = {
            "overdue": Workflow.objects.overdue,
            "never_started": Workflow.objects.never_started,
            "parked": Workflow.objects.parked,
        }.get(self.value() or "")
        if rows is None:
            return queryset
        return queryset.filter(pk__in=rows().values("pk"))


class WaitKindFilter(admin.SimpleListFilter):
    title = "waiting on"
    parameter_name = "wait"

    def lookups(self, request, model_admin):
        return (("event", "an event (continue_if)"), ("poll", "a condition (wait_until)"))

    def queryset(self, request, queryset):
        prefix = {"event": EVENT_WAIT, "poll": POLL_WAIT}.get(self.value() or "")
        if prefix is None:
            return queryset
        return queryset.filter(has_pending_wait(prefix), state=Workflow.STATE.idle)


class StepKindFilter(admin.SimpleListFilter):
    title = "step kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [(kind, label) for kind, label in KIND_LABELS.items()] + [
            ("workflow", "workflow marker")
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        # An equality on the indexed KindPrefix expression, not a step_name prefix range: the
        # newest steps of the kind come off the (kind, id) index without a sort.
        kind = kind_prefix("" if value == "workflow" else value)
        return queryset.filter(Exact(KindPrefix("step_name"), kind))


class ErrorClassFilter(admin.SimpleListFilter):
    title = "error class"
    parameter_name = "error_class"

    def lookups(self, request, model_admin):
        classes = cached_distinct(ErrorLog, "error_class")
        if self.value() and self.value() not in classes:
            classes = [self.value(), *classes]
        return [(c, short_class(c)) for c in classes]

    def queryset(self, request, queryset):
        return queryset.filter(error_class=self.value()) if self.value() else queryset
