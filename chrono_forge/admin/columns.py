"""List columns the changelists share."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from ..templatetags.chrono_forge_admin import cf_ago


def time_column(field: str, description: str) -> Any:
    """A changelist column showing ``field`` (a datetime) on one line: "5m ago", the largest unit
    only, so the list fits a 1366 px wide screen; the tooltip is the absolute UTC time. Sorts by
    ``field``."""

    @admin.display(description=description, ordering=field)
    def column(self, obj):
        return cf_ago(getattr(obj, field), "short")

    column.__name__ = f"{field}_column"
    return column
