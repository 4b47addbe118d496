"""Small helpers shared by the tests (import them; conftest.py holds only fixtures and hooks)."""

import time


def wait_for(predicate, timeout, interval=0.05, message=None):
    """Poll ``predicate()`` until it returns something truthy, and return that value.

    Raises ``AssertionError`` after ``timeout`` seconds. Tests use this instead of fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def flash(response) -> list[str]:
    """The admin messages this request added (not older ones still waiting in the session)."""
    return [str(m) for m in response.wsgi_request._messages._queued_messages]
