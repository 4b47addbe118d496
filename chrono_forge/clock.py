"""The one clock every part of chrono_forge reads.

Production reads :func:`django.utils.timezone.now`; :mod:`chrono_forge.testing` installs a
controllable clock so waits, backoffs and schedules can be fast-forwarded without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from django.utils import timezone

_override: Callable[[], datetime] | None = None


def now() -> datetime:
    """The current time (timezone-aware)."""
    return _override() if _override is not None else timezone.now()


@contextmanager
def use(source: Callable[[], datetime]) -> Iterator[None]:
    """Make :func:`now` return ``source()`` inside the block (restored on exit, even nested)."""
    global _override
    previous, _override = _override, source
    try:
        yield
    finally:
        _override = previous
