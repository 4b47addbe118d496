"""Workflow definitions are checked when the class is defined, and RetryPolicy checks its own
arguments: a bad definition fails at import time with an error naming what to change, instead of
leaving its first workflow idle or retried."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from chrono_forge import DurableWorkflow, RetryPolicy
from chrono_forge.retry import CompositeRetryPolicy


# -- RetryPolicy arguments -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,error,names",
    [
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": -3}, ValueError, "max_attempts"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts"),
        ({"max_attempts": True}, TypeError, "max_attempts"),
        ({"max_attempts": "3"}, TypeError, "max_attempts"),
        ({"base": -1}, ValueError, "base"),
        ({"base": math.nan}, ValueError, "base"),
        ({"base": math.inf}, ValueError, "base"),
        ({"base": 1e300}, ValueError, "base"),
        ({"base": 10**400}, ValueError, "base"),
        ({"base": True}, TypeError, "base"),
        ({"base": "1"}, TypeError, "base"),
        ({"cap": -math.inf}, ValueError, "cap"),
        ({"cap": timedelta.max}, ValueError, "cap"),
        ({"cap": timedelta(seconds=-1)}, ValueError, "cap"),
        ({"cap": None}, TypeError, "cap"),
        ({"jitter": 1}, TypeError, "jitter"),
        ({"jitter": "yes"}, TypeError, "jitter"),
        ({"jitter": None}, TypeError, "jitter"),
        ({"retry_on": ValueError}, TypeError, "retry_on"),
        ({"retry_on": "ValueError"}, TypeError, "retry_on"),
        ({"retry_on": {ValueError}}, TypeError, "retry_on"),
        ({"retry_on": [ValueError, "KeyError"]}, TypeError, "retry_on"),
        ({"retry_on": [ValueError()]}, TypeError, "retry_on"),
        ({"retry_on": (int,)}, TypeError, "retry_on"),
    ],
)
def test_retry_policy_arguments_are_validated_by_name(kwargs, error, names):
    with pytest.raises(error, match=rf"RetryPolicy {names}"):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": None},
        {"max_attempts": 1, "base": 0, "cap": 0, "jitter": False},
        {"base": timedelta(minutes=5), "cap": timedelta(days=3650)},
        {"retry_on": []},
        {"retry_on": (KeyError, ValueError)},
    ],
)
def test_valid_retry_policies_are_accepted(kwargs):
    policy = RetryPolicy(**kwargs)
    assert policy.cap >= 0 and policy.base >= 0


def test_an_unbounded_policy_never_overflows_its_backoff():
    policy = RetryPolicy(max_attempts=None, base=1, cap=600, jitter=False)
    assert policy.backoff(5000) == 600
    assert RetryPolicy(max_attempts=None, base=0, cap=600).backoff(10**6) == 0


# -- class definitions -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "policy",
    [
        "3 attempts",
        3,
        RetryPolicy,
        [RetryPolicy(), "catch-all"],
        [],
        {"max_attempts": 3},
    ],
)
def test_a_bad_class_retry_policy_fails_at_class_creation(policy):
    with pytest.raises(TypeError, match=r"Bad\.retry_policy"):

        class Bad(DurableWorkflow):
            retry_policy = policy

            def perform(self):
                pass


def test_good_class_retry_policies_are_accepted():
    class Single(DurableWorkflow):
        retry_policy = RetryPolicy(max_attempts=2)

        def perform(self):
            pass

    class Listed(DurableWorkflow):
        retry_policy = [RetryPolicy(retry_on=[KeyError]), RetryPolicy()]

        def perform(self):
            pass

    class Composite(DurableWorkflow):
        retry_policy = CompositeRetryPolicy([RetryPolicy()])

        def perform(self):
            pass

    assert Listed.workflow_retry_policy().policies[0].retry_on == (KeyError,)


@pytest.mark.parametrize(
    "source,match",
    [
        ("def perform(self, order_id): pass", r"'order_id' positionally.*keyword-only"),
        ("def perform(self, order_id=1): pass", r"'order_id' positionally"),
        ("def perform(self, *args): pass", r"'args' positionally"),
        ("def perform(self, a, /): pass", r"'a' positionally"),
        ("def perform(*, order_id): pass", r"self first"),
        ("perform = staticmethod(lambda **kw: None)", r"plain method"),
        ("perform = 'not a method'", r"plain method"),
        ("def perform(self, *, attempt): pass", r"'attempt' is reserved"),
        ("def perform(self, *, retry_workflow=False): pass", r"'retry_workflow' is reserved"),
        ("def perform(self, *, options): pass", r"'options' is reserved"),
    ],
)
def test_perform_must_take_keyword_only_arguments(source, match):
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - builds the method under test
    with pytest.raises(TypeError, match=rf"Bad\.perform.*{match}|{match}"):
        type("Bad", (DurableWorkflow,), {"perform": namespace["perform"]})


def test_keyword_only_and_var_keyword_perform_are_accepted():
    class Explicit(DurableWorkflow):
        def perform(self, *, order_id, note=None):
            pass

    class Anything(DurableWorkflow):
        def perform(self, **kwargs):
            pass

    class Inherited(Explicit):
        pass

    assert Inherited.perform is Explicit.perform


def test_a_class_path_longer_than_the_column_fails_at_class_creation():
    with pytest.raises(TypeError, match=r"class path .* 255"):
        type("W" * 260, (DurableWorkflow,), {"perform": lambda self: None, "__module__": "m"})
