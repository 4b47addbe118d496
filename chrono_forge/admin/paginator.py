"""A paginator that never counts a whole table."""

from __future__ import annotations

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.utils.functional import cached_property

from .presenters import COUNT_CAP, capped_count


class CappedPaginator(Paginator):
    """``count`` is ``SELECT COUNT(*) FROM (... LIMIT 5001)``: exact up to 5000, then 5001 and
    ``capped`` is True (shown as "5000+"). Pages past the cap stay reachable with ``?p=``."""

    cap = COUNT_CAP

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
