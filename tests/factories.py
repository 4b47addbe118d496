"""What the tests build the same way everywhere: per-test module state and admin users.

Per-test state: the workflow modules of the tests keep counters (how often a body ran), switches
(what a body should do) and records (what it saw) at module level, so that a worker process can
import them. Each is made with :func:`per_test` (a counter with :func:`counter`), and conftest.py's
autouse fixture clears every one of them before and after each test: no test module imports a reset
fixture or calls a reset of its own.

Admin users: :func:`log_in_operator` logs a test client in as a superuser (the ``operator``
fixture of conftest.py uses it; ``login_as`` there makes a staff user with chosen permissions).
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

T = TypeVar("T")

_PER_TEST: list[Any] = []


def per_test(container: T) -> T:
    """Register a module-level dict, list or set (anything with ``clear()``): it is emptied before
    and after every test. Returns it, so a module writes ``FLAGS = per_test({})``."""
    _PER_TEST.append(container)
    return container


def clear_per_test_state() -> None:
    """Empty everything :func:`per_test` registered (conftest.py's autouse fixture calls it)."""
    for container in _PER_TEST:
        container.clear()


class Counter(dict):
    """How many times each named thing ran in this process: ``hit(name)`` counts one more and
    returns the new count (thread-safe: threaded tests count from several threads), ``of(name)``
    reads it (0 when it never ran). A dict, so tests may also compare or set it directly."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def hit(self, name: str) -> int:
        with self._lock:
            self[name] = self.get(name, 0) + 1
            return self[name]

    def of(self, name: str) -> int:
        return self.get(name, 0)


def counter() -> Counter:
    """A per-test :class:`Counter` (emptied before and after every test)."""
    return per_test(Counter())


def log_in_operator(client, username: str = "root"):
    """Log ``client`` in as a new superuser (every admin permission); returns the user."""
    from django.contrib.auth.models import User

    user = User.objects.create_superuser(username, password="pw")
    client.force_login(user)
    return user
