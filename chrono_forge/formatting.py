"""Formatting shared by the operator surfaces (operations' messages, the admin, the command)."""

from __future__ import annotations


def human_duration(seconds: float | None) -> str:
    """The two most significant units: "45s", "1m 04s", "3h 12m", "2d 21h"; "" for None/negative."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds >= 0.001 else "0s"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
