"""A paginator that never counts a whole table, and whose "next" link past the count cap carries the
last id of its page (keyset), so that deep pages are a seek of the primary key, not an OFFSET."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.main import ORDER_VAR, PAGE_VAR, ChangeList
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

from ..pages.queries import COUNT_CAP, capped_count

#: The query parameter of a page past the cap read as the rows older than this id ("next" links).
BEFORE_VAR = "before"


class CappedPaginator(Paginator):
    """``count`` is ``SELECT COUNT(*) FROM (... LIMIT 5001)``: exact up to 5000, then 5001 and
    ``capped`` is True (shown as "5000+"). Past the cap the count is a floor, not the total, so
    pages beyond it are sliced by offset without clamping to the count: every row stays
    reachable with ``?p=`` and the "next page" link, which shows while a page is full and more
    rows follow (``has_more``, known by reading one row past the page).

    On a list in primary-key order, newest first (every list's default), that link also carries
    the page's last id (``before``): the next page is then the ``per_page`` rows below it, a seek
    of the primary key instead of an OFFSET walk over every row above it (seconds half-way down
    4.3M step logs on SQLite). ``?p=`` alone still reaches any page by offset."""

    cap = COUNT_CAP
    #: Whether the last page served past the cap had rows after it (None until one was served).
    has_more: bool | None = None
    #: The id the page's rows are older than (``?before=``, set by the admin), or None.
    before: Any = None
    #: The last id of the page served, when the next one can be read by keyset (else None).
    next_before: Any = None

    @cached_property
    def count(self) -> int:
        return capped_count(self.object_list, self.cap)

    @property
    def capped(self) -> bool:
        return self.count > self.cap

    @property
    def count_text(self) -> str:
        return f"{self.cap}+" if self.capped else str(self.count)

    def validate_number(self, number):
        if not self.capped:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number  # beyond the cap the real last page is unknown; an empty page is fine

    def page(self, number) -> Page:
        if not self.capped:
            return super().page(number)
        number = self.validate_number(number)
        keyset = self._newest_first()
        queryset = self.object_list
        if keyset and number > 1 and self.before is not None:
            assert isinstance(queryset, QuerySet)  # _newest_first says so
            rows = self._rows(queryset.filter(pk__lt=self.before), 0, self.per_page + 1)
        else:
            bottom = (number - 1) * self.per_page
            rows = self._rows(queryset, bottom, bottom + self.per_page + 1)
        self.has_more = len(rows) > self.per_page
        page = rows[: self.per_page]
        self.next_before = page[-1].pk if keyset and self.has_more else None
        # Paginator._get_page: Django's hook for building a Page (absent from the stubs).
        return self._get_page(page, number, self)  # type: ignore[attr-defined]

    def next_page_params(self, number: int) -> dict:
        """The query parameters of the page after page ``number``: its number, and the last id
        of page ``number`` when the next one is read by keyset (None: the parameter removed)."""
        return {PAGE_VAR: number + 1, BEFORE_VAR: self.next_before}

    def _newest_first(self) -> bool:
        """Whether the list is in primary-key order, newest first, and nothing else (the admin's
        default ``-id``, which the Workflows list repeats): then "older than the last id" is
        exactly the next page."""
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return False
        pk = queryset.model._meta.pk
        order = set(queryset.query.order_by)
        return bool(order) and order <= {"-pk", f"-{pk.name}", f"-{pk.attname}"}

    def _rows(self, queryset, bottom: int, top: int) -> list:
        """The rows ``[bottom:top]`` of a list past the cap: their ids first (no join, no wide
        column, so an index that holds the id can answer it and the sort handles ids only), then
        those rows by primary key. Sliced directly, the query joined the workflow of every row it
        skipped or sorted (2.5 s half-way down 4.35M step logs on PostgreSQL; seconds for the
        pending steps on SQLite, which read each of them from the table to sort it)."""
        if not isinstance(queryset, QuerySet):
            return list(queryset[bottom:top])
        ids = list(queryset.values_list("pk", flat=True)[bottom:top])
        if queryset.query.annotations:
            rows = queryset.order_by().filter(pk__in=ids)
        else:
            # Without the list's filters: they chose the ids, and a filter's subquery would run
            # a second time. The same related rows and deferred columns.
            rows = queryset.model._default_manager.filter(pk__in=ids)
            rows.query.select_related = queryset.query.select_related
            rows.query.deferred_loading = queryset.query.deferred_loading
        by_pk = {row.pk: row for row in rows}
        return [by_pk[pk] for pk in ids if pk in by_pk]  # a row deleted in between is skipped


class CappedChangeList(ChangeList):
    """A changelist whose ``before`` parameter is the paginator's, not a filter, and which no
    link keeps unless it sets it (a filter, a sort or a page number leads to page 1 of that list
    or to that page by offset, not to rows older than an id of another page)."""

    def __init__(self, request, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.params.pop(BEFORE_VAR, None)  # the search form's hidden fields
        self.filter_params.pop(BEFORE_VAR, None)

    def get_filters_params(self, params=None):
        lookup_params = super().get_filters_params(params)
        lookup_params.pop(BEFORE_VAR, None)
        return lookup_params

    def get_query_string(self, new_params=None, remove=None):
        return super().get_query_string({BEFORE_VAR: None, **(new_params or {})}, remove)

    def get_ordering(self, request, queryset):
        """A list sorted by a column breaks ties in that column's direction. Django breaks them
        with the admin's default ``-id`` whatever the direction (``ORDER BY state ASC, id
        DESC``), an order no index of (state, id) gives in either direction, so the database
        sorted every row for a page of 50 (a fifth of a second at 500k workflows on SQLite).
        A column that leads a unique pair is broken by the pair's other column instead
        (class: ``job_class, key``, the order of the unique (job_class, key) index)."""
        ordering = super().get_ordering(request, queryset)
        if ORDER_VAR not in self.params or len(ordering) < 2 or not isinstance(ordering[0], str):
            return ordering
        pk = self.lookup_opts.pk
        if ordering[-1] not in ("-pk", f"-{pk.name}", f"-{pk.attname}"):
            return ordering
        direction = "-" if ordering[0].startswith("-") else ""
        column = ordering[0].lstrip("-")
        tie_break = "pk"
        for constraint in self.lookup_opts.total_unique_constraints:
            if len(constraint.fields) == 2 and constraint.fields[0] == column:
                tie_break = constraint.fields[1]
        return [*ordering[:-1], direction + tie_break]
