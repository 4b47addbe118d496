"""Interrupting a step body at its timeout, where a signal can do it safely.

A django-q2 worker runs each task in its process's main thread, so a ``SIGALRM`` handler can raise
:class:`~chrono_forge.exceptions.StepTimeout` inside the body. Elsewhere (a thread of a web server,
a platform without ``setitimer``, an alarm already running on an interval timer) nothing is
interrupted and the caller falls back to the durable check: an attempt found finished past its
timeout, or unfinished by a later pass, counts as timed out.

django-q2 arms ``SIGALRM`` itself for its task timeout (``Q_CLUSTER["timeout"]``). The step's alarm
shares the timer: it is armed only when it would fire before the one already running, and on the
way out the previous handler and the rest of its delay are put back, so django-q2's timeout still
fires when it should.

What a signal does not interrupt: a long call inside a C extension that does not return to the
interpreter (the exception is raised when it does), and a body that catches ``Exception`` around
the interrupted call (the attempt then counts as timed out when it returns, if it returns late).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from .exceptions import StepTimeout


def can_interrupt() -> bool:
    """A ``SIGALRM`` handler can be installed here: the main thread, on a platform with
    ``setitimer``, with no interval timer running and a handler set from Python (or none)."""
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    _delay, interval = signal.getitimer(signal.ITIMER_REAL)
    return not interval and signal.getsignal(signal.SIGALRM) is not None


@contextmanager
def interrupt_after(timeout: timedelta, error: Callable[[], StepTimeout]) -> Iterator[None]:
    """Raise ``error()`` in the body of the ``with`` once ``timeout`` has passed, where
    :func:`can_interrupt`; otherwise run the body as is. The previous ``SIGALRM`` handler and the
    remainder of its alarm are restored on the way out."""
    seconds = timeout.total_seconds()
    if not can_interrupt():
        yield
        return
    previous_delay, _interval = signal.getitimer(signal.ITIMER_REAL)
    if previous_delay and previous_delay <= seconds:
        yield  # the alarm already running fires first: leave it to its owner
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise error()

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))  # overdue: fire at once
