"""Template filters of chrono_forge's admin pages."""

from __future__ import annotations

import json
from datetime import datetime

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from .. import clock
from ..formatting import human_duration

register = template.Library()
DASH = mark_safe('<span class="cf-muted">—</span>')


@register.filter
def cf_duration(seconds):
    """Seconds -> "1m 04s" (empty for None)."""
    return human_duration(seconds)


@register.filter
def cf_ago(moment, style: str = ""):
    """A relative time ("5m 02s ago", "in 3h 10m") whose tooltip is the absolute UTC time.
    ``cf_ago:"short"`` keeps the largest unit only ("5m ago"), for list columns that must fit a
    1366 px wide screen."""
    if not isinstance(moment, datetime):
        return DASH
    delta = (clock.now() - moment).total_seconds()
    span = human_duration(abs(delta))
    if style == "short":
        span = span.split(" ", 1)[0]
    text = "just now" if abs(delta) < 1 else (f"{span} ago" if delta > 0 else f"in {span}")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        moment.strftime("%Y-%m-%d %H:%M:%S %Z"),
        text,
    )


@register.filter
def cf_json_short(value, limit=120):
    """A stored JSON value on one line, cut to ``limit`` characters (a message's payload)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.filter
def cf_short_class(job_class):
    return str(job_class).rsplit(".", 1)[-1]


@register.simple_tag
def cf_next_page_url(cl):
    """The changelist URL of the page after this one, filters, sort and search kept, with this
    page's last id when the next page is read by keyset (CappedPaginator.next_page_params)."""
    return cl.get_query_string(cl.paginator.next_page_params(cl.page_num))
