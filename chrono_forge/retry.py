"""Retry policies: exponential backoff with equal jitter, per-error matching and per-error budgets.

``attempts`` counts from 1 and includes the failure that just happened. A plain :class:`RetryPolicy`
allows a retry while ``attempts < max_attempts``. A :class:`CompositeRetryPolicy` routes each error
to the first sub-policy that matches it and counts attempts per sub-policy (its ``budget_key``)
through a callback, so a step can allow, say, 2 network failures and 3 rate-limit failures
independently.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

CountCallback = Callable[[str], int]


#: The longest ``base``/``cap`` a policy accepts: a backoff must stay addable to the clock.
MAX_BACKOFF = timedelta(days=3650)


def _seconds(value: timedelta | int | float, name: str) -> float:
    """A finite, non-negative number of seconds no longer than MAX_BACKOFF, or an error naming
    the argument."""
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise TypeError(
            f"RetryPolicy {name} must be a timedelta or a number of seconds, got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"RetryPolicy {name} must be a finite number of seconds, got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        seconds = float(value) if abs(value) <= 10**18 else (math.inf if value > 0 else -math.inf)
    if seconds < 0:
        raise ValueError(f"RetryPolicy {name} must be >= 0, got {value!r}")
    if seconds > MAX_BACKOFF.total_seconds():
        raise ValueError(
            f"RetryPolicy {name} must be at most {MAX_BACKOFF.days} days "
            f"({MAX_BACKOFF.total_seconds():g} s), got {value!r}"
        )
    return seconds


def _retry_on(retry_on: object) -> tuple[type[BaseException], ...] | None:
    if retry_on is None:
        return None
    if isinstance(retry_on, type):
        raise TypeError(
            f"RetryPolicy retry_on must be a list or tuple of exception classes, got the class "
            f"{retry_on.__name__} itself: write retry_on=[{retry_on.__name__}]"
        )
    if not isinstance(retry_on, (list, tuple)):
        raise TypeError(
            f"RetryPolicy retry_on must be a list or tuple of exception classes, got {retry_on!r}"
        )
    for cls in retry_on:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"RetryPolicy retry_on must list exception classes, got {cls!r}")
    return tuple(retry_on)


class RetryPolicy:
    """Up to ``max_attempts`` attempts (``None``: unbounded), backoff ``base * 2**(attempts-1)``
    clamped to ``cap`` seconds, halved-and-randomised when ``jitter`` (equal jitter).

    ``retry_on=None`` retries any ``Exception``; a list retries those classes and their subclasses;
    ``[]`` retries nothing.

    Args:
        max_attempts: attempts in all, the first one included (at least 1; ``None``: unbounded).
        base: the first backoff, a ``timedelta`` or seconds.
        cap: the longest backoff, a ``timedelta`` or seconds (at most 10 years).
        jitter: wait between half the backoff and all of it, at random.
        retry_on: the exception classes to retry (a list or tuple), or ``None`` for any.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range.

    Example::

        class SyncWorkflow(DurableWorkflow):
            retry_policy = RetryPolicy(max_attempts=5, base=2, cap=60, retry_on=[TimeoutError])

            def perform(self):
                self.durably_execute(self.push, retry_policy=RetryPolicy(max_attempts=10))
    """

    def __init__(
        self,
        max_attempts: int | None = 3,
        base: timedelta | int | float = 1,
        cap: timedelta | int | float = 30,
        jitter: bool = True,
        retry_on: Sequence[type[BaseException]] | None = None,
    ):
        if max_attempts is not None:
            if not isinstance(max_attempts, int) or isinstance(max_attempts, bool):
                raise TypeError(
                    f"RetryPolicy max_attempts must be an int or None, got {max_attempts!r}"
                )
            if max_attempts < 1:
                raise ValueError(f"RetryPolicy max_attempts must be >= 1, got {max_attempts!r}")
        if not isinstance(jitter, bool):
            raise TypeError(f"RetryPolicy jitter must be True or False, got {jitter!r}")
        self.max_attempts = max_attempts
        self.base = _seconds(base, "base")
        self.cap = _seconds(cap, "cap")
        self.jitter = jitter
        self.retry_on: tuple[type[BaseException], ...] | None = _retry_on(retry_on)

    # presets -----------------------------------------------------------------------------------
    @classmethod
    def step_default(cls) -> RetryPolicy:
        """The default for ``durably_execute`` steps: 3 attempts, 1 s base, 30 s cap, jitter."""
        return cls(max_attempts=3, base=1, cap=30, jitter=True)

    @classmethod
    def workflow_default(cls) -> RetryPolicy:
        """The default for uncaught workflow-level errors: 10 attempts, capped at 600 s."""
        return cls(max_attempts=10, base=1, cap=600, jitter=True)

    @classmethod
    def wait_default(cls) -> RetryPolicy:
        """The default for wait conditions: retries nothing."""
        return cls(max_attempts=None, retry_on=[])

    @staticmethod
    def compose(*policies: RetryPolicy) -> CompositeRetryPolicy:
        """A :class:`CompositeRetryPolicy` of ``policies`` (the same as passing them as a list)."""
        return CompositeRetryPolicy(policies)

    # predicates --------------------------------------------------------------------------------
    def matches(self, error: BaseException) -> bool:
        return self.retry_on is None or isinstance(error, self.retry_on)

    def allows(self, attempts: int) -> bool:
        """True while another attempt fits under the cap."""
        return self.max_attempts is None or attempts < self.max_attempts

    def retryable(self, error: BaseException, attempts: int) -> bool:
        return self.matches(error) and self.allows(attempts)

    @property
    def budget_key(self) -> str:
        """``"*"`` for a catch-all, else the sorted, comma-joined full names of ``retry_on``."""
        if self.retry_on is None:
            return "*"
        return ",".join(sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in self.retry_on))

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1``."""
        # The exponent is clamped so an unbounded policy's thousandth attempt cannot overflow.
        exponent = min(max(attempts - 1, 0), 1000)
        delay = min(self.base * 2.0**exponent, self.cap)
        if self.jitter and delay > 0:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay

    def retry_backoff(
        self, error: BaseException, attempts: int, count: CountCallback | None = None
    ) -> float | None:
        """The delay before the next attempt, or ``None`` when the error is not retried.

        A plain policy never calls ``count``: the caller's ``attempts`` is its budget.
        """
        return self.backoff(attempts) if self.retryable(error, attempts) else None

    def __repr__(self) -> str:
        retry_on = None if self.retry_on is None else [c.__name__ for c in self.retry_on]
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, base={self.base:g}, cap={self.cap:g}, "
            f"jitter={self.jitter}, retry_on={retry_on})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryPolicy) and (
            (self.max_attempts, self.base, self.cap, self.jitter, self.retry_on)
            == (other.max_attempts, other.base, other.cap, other.jitter, other.retry_on)
        )

    __hash__ = None  # type: ignore[assignment]


class CompositeRetryPolicy:
    """Per-error budgets: the first matching sub-policy decides, counting its own attempts.

    Built from a list of policies wherever a policy is accepted, or with
    :meth:`RetryPolicy.compose`. An error no sub-policy matches is not retried.

    Args:
        policies: the sub-policies, the most specific first and a catch-all last.

    Example::

        retry_policy = RetryPolicy.compose(
            RetryPolicy(max_attempts=5, retry_on=[RateLimited], base=10),
            RetryPolicy(max_attempts=2),     # anything else
        )
    """

    def __init__(self, policies: Iterable[RetryPolicy]):
        self.policies = tuple(policies)
        if not self.policies:
            raise ValueError("a composite retry policy needs at least one RetryPolicy")
        for policy in self.policies:
            if not isinstance(policy, RetryPolicy):
                raise TypeError(
                    f"composite retry policies take RetryPolicy objects, got {policy!r}"
                )

    def policy_for(self, error: BaseException) -> RetryPolicy | None:
        """The first sub-policy whose ``retry_on`` matches ``error``, or ``None``."""
        return next((p for p in self.policies if p.matches(error)), None)

    def matches(self, error: BaseException) -> bool:
        return self.policy_for(error) is not None

    @property
    def max_attempts(self) -> int | None:
        """The largest sub-cap, or None if any sub-policy is unbounded."""
        caps = [p.max_attempts for p in self.policies]
        return None if any(c is None for c in caps) else max(caps)  # type: ignore[type-var]

    def retry_backoff(
        self, error: BaseException, attempts: int, count: CountCallback | None = None
    ) -> float | None:
        """Route to the matching sub-policy; with ``count``, its budget is the per-key count."""
        policy = self.policy_for(error)
        if policy is None:
            return None
        used = count(policy.budget_key) if count is not None else attempts
        return policy.retry_backoff(error, used)

    def __repr__(self) -> str:
        return f"CompositeRetryPolicy({list(self.policies)!r})"


AnyRetryPolicy = RetryPolicy | CompositeRetryPolicy


def coerce(policy: AnyRetryPolicy | Sequence[RetryPolicy] | None) -> AnyRetryPolicy | None:
    """A list/tuple becomes a composite; a policy or composite passes through; None stays None."""
    if policy is None or isinstance(policy, (RetryPolicy, CompositeRetryPolicy)):
        return policy
    if isinstance(policy, (list, tuple)):
        return CompositeRetryPolicy(policy)
    raise TypeError(f"expected a RetryPolicy, a list of them, or None; got {policy!r}")


def retry_policy(*policies: RetryPolicy, **options) -> AnyRetryPolicy:
    """Class DSL: ``retry_policy = retry_policy(p1, p2)`` (composite) or ``retry_policy(...)``.

    ``retry_policy(max_attempts=5)`` is one plain :class:`RetryPolicy`."""
    if policies and options:
        raise TypeError(
            "pass either RetryPolicy objects (a composite) or keyword options, not both"
        )
    if options:
        return RetryPolicy(**options)
    return CompositeRetryPolicy(policies)
