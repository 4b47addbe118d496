"""RetryPolicy and composite (per-error budget) policies."""

from __future__ import annotations

import pytest

from chrono_forge import CompositeRetryPolicy, RetryPolicy
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from chrono_forge.retry import coerce, retry_policy
from tests import workflows_core as w
from tests.workflows_core import (
    DeclinedError,
    NetworkError,
    RateLimitError,
    SlowNetworkError,
)

NETWORK = "tests.workflows_core.NetworkError"
RATE_LIMIT = "tests.workflows_core.RateLimitError"


# -- RetryPolicy -----------------------------------------------------------------------------------
def test_attempts_count_from_one_and_include_the_failure():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.retryable(ValueError(), n) for n in (1, 2, 3, 4)] == [True, True, False, False]


def test_unbounded_policy_retries_forever():
    assert RetryPolicy(max_attempts=None).retryable(ValueError(), 1_000_000)


def test_retry_on_none_list_and_empty():
    assert RetryPolicy(retry_on=None).retryable(KeyError(), 1)
    listed = RetryPolicy(retry_on=[NetworkError])
    assert listed.retryable(NetworkError(), 1) and listed.retryable(SlowNetworkError(), 1)
    assert not listed.retryable(RateLimitError(), 1)
    assert not RetryPolicy(retry_on=[]).retryable(NetworkError(), 1)


def test_cap_and_class_predicate_combine():
    policy = RetryPolicy(max_attempts=2, retry_on=[NetworkError])
    assert not policy.retryable(NetworkError(), 2)  # right error, cap exhausted
    assert not policy.retryable(RateLimitError(), 1)  # wrong error, under the cap


def test_backoff_without_jitter():
    assert [RetryPolicy(base=1, jitter=False).backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    capped = RetryPolicy(base=1, cap=30, jitter=False)
    assert capped.backoff(10) == 30 and capped.backoff(100) == 30
    assert [RetryPolicy(base=5, cap=100, jitter=False).backoff(n) for n in (1, 2)] == [5, 10]


def test_equal_jitter_stays_within_half_and_full_delay():
    policy = RetryPolicy(base=1, cap=30, jitter=True)
    samples = [policy.backoff(4) for _ in range(50)]
    assert all(4 <= s <= 8 for s in samples)
    assert len(set(samples)) > 1  # actually randomised


def test_presets():
    step = RetryPolicy.step_default()
    assert (step.max_attempts, step.retry_on, step.base, step.cap, step.jitter) == (
        3,
        None,
        1,
        30,
        True,
    )
    workflow = RetryPolicy.workflow_default()
    assert (workflow.max_attempts, workflow.retry_on, workflow.cap) == (10, None, 600)
    wait = RetryPolicy.wait_default()
    assert (wait.retry_on, wait.max_attempts) == ((), None)


def test_matches():
    assert RetryPolicy(retry_on=None).matches(Exception())
    assert not RetryPolicy(retry_on=[]).matches(Exception())
    listed = RetryPolicy(retry_on=[NetworkError])
    assert listed.matches(NetworkError()) and listed.matches(SlowNetworkError())
    assert not listed.matches(RateLimitError())


def test_budget_key_is_order_independent():
    assert RetryPolicy().budget_key == "*"
    a = RetryPolicy(retry_on=[RateLimitError, NetworkError]).budget_key
    b = RetryPolicy(retry_on=[NetworkError, RateLimitError]).budget_key
    assert a == b == f"{NETWORK},{RATE_LIMIT}"


def test_retry_backoff_returns_delay_or_none_and_never_counts_for_a_plain_policy():
    policy = RetryPolicy(max_attempts=2, base=3, jitter=False)

    def count(key):  # pragma: no cover - must not be called
        raise AssertionError("a plain policy must not call count")

    assert policy.retry_backoff(ValueError(), 1, count=count) == 3
    assert policy.retry_backoff(ValueError(), 2, count=count) is None


def test_compose():
    composite = RetryPolicy.compose(RetryPolicy(), RetryPolicy(retry_on=[NetworkError]))
    assert isinstance(composite, CompositeRetryPolicy) and len(composite.policies) == 2


@pytest.mark.parametrize(
    "bad,error",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_invalid_max_attempts(bad, error):
    with pytest.raises(error, match="max_attempts"):
        RetryPolicy(max_attempts=bad)


def test_invalid_durations_and_retry_on():
    with pytest.raises(ValueError):
        RetryPolicy(base=-1)
    with pytest.raises(TypeError):
        RetryPolicy(cap="30")
    with pytest.raises(TypeError):
        RetryPolicy(retry_on=["NetworkError"])


# -- composite policies ----------------------------------------------------------------------------
def test_empty_composite_is_rejected():
    with pytest.raises(ValueError):
        CompositeRetryPolicy([])
    with pytest.raises(TypeError):
        CompositeRetryPolicy([object()])


def test_policy_for_routes_to_the_first_match():
    network = RetryPolicy(retry_on=[NetworkError])
    rate = RetryPolicy(retry_on=[RateLimitError])
    catch_all = RetryPolicy()
    composite = CompositeRetryPolicy([network, rate, catch_all])
    assert composite.policy_for(NetworkError()) is network
    assert composite.policy_for(SlowNetworkError()) is network  # a subclass routes to its parent's
    assert composite.policy_for(RateLimitError()) is rate
    assert composite.policy_for(KeyError()) is catch_all
    assert CompositeRetryPolicy([network]).policy_for(KeyError()) is None


def test_composite_backoff_uses_the_callback_count_not_attempts():
    composite = CompositeRetryPolicy(
        [RetryPolicy(max_attempts=5, base=2, jitter=False, retry_on=[RateLimitError])]
    )
    seen = []

    def count(key):
        seen.append(key)
        return 3

    assert composite.retry_backoff(RateLimitError(), attempts=1, count=count) == 8
    assert seen == [RATE_LIMIT]
    assert composite.retry_backoff(RateLimitError(), attempts=2) == 4  # no callback: attempts


def test_composite_sub_cap_applies_and_unmatched_errors_are_not_retried():
    composite = CompositeRetryPolicy(
        [
            RetryPolicy(max_attempts=1, retry_on=[DeclinedError]),
            RetryPolicy(retry_on=[NetworkError]),
        ]
    )
    assert composite.retry_backoff(DeclinedError(), 1, count=lambda key: 1) is None
    assert composite.retry_backoff(RateLimitError(), 1, count=lambda key: 1) is None


def test_composite_max_attempts():
    assert (
        CompositeRetryPolicy(
            [RetryPolicy(max_attempts=2), RetryPolicy(max_attempts=5)]
        ).max_attempts
        == 5
    )
    assert (
        CompositeRetryPolicy(
            [RetryPolicy(max_attempts=2), RetryPolicy(max_attempts=None)]
        ).max_attempts
        is None
    )


def test_coercion():
    single = RetryPolicy()
    composite = CompositeRetryPolicy([single])
    assert isinstance(coerce([single]), CompositeRetryPolicy)
    assert coerce(single) is single and coerce(composite) is composite and coerce(None) is None
    with pytest.raises(TypeError):
        coerce("3 attempts")


def test_class_dsl():
    assert isinstance(retry_policy(RetryPolicy(), RetryPolicy()), CompositeRetryPolicy)
    assert retry_policy(max_attempts=5) == RetryPolicy(max_attempts=5)
    with pytest.raises(TypeError):
        retry_policy(RetryPolicy(), max_attempts=5)


@pytest.mark.django_db
def test_per_error_budgets_in_a_workflow(chrono_forge_env):
    w.FLAGS["errors"] = [NetworkError("1"), RateLimitError("2"), NetworkError("3")]
    wf = w.Composite.perform_later("budgets")
    chrono_forge_env.run_all()
    log = ExecutionLog.objects.get(workflow=wf)
    assert (log.attempts, log.state) == (3, "failed")
    assert log.metadata["retry_counts"] == {NETWORK: 2, RATE_LIMIT: 1}
    # the failure its replays raise
    assert log.metadata["failure"] == "durably_execute$call_api failed after 3 attempt(s): 3"
    assert Workflow.objects.get(pk=wf.pk).state == "stalled"


@pytest.mark.django_db
def test_a_subclass_error_counts_under_its_parent_key(chrono_forge_env):
    w.FLAGS["error"] = SlowNetworkError("slow")
    wf = w.CompositeSingle.perform_later("sub")
    chrono_forge_env.run_all()
    log = ExecutionLog.objects.get(workflow=wf)
    assert (log.attempts, log.state) == (2, "failed")
    assert log.metadata["retry_counts"] == {NETWORK: 2}


@pytest.mark.django_db
def test_an_error_matching_no_sub_policy_fails_fast(chrono_forge_env):
    w.FLAGS["error"] = RateLimitError("unlisted")
    wf = w.CompositeSingle.perform_later("nomatch")
    chrono_forge_env.run_all()
    log = ExecutionLog.objects.get(workflow=wf)
    assert (log.attempts, log.state) == (1, "failed")
    assert w.calls("CompositeSingle.call_api") == 1


@pytest.mark.django_db
def test_a_plain_policy_writes_no_retry_counts(chrono_forge_env):
    wf = w.PlainPolicyRetry.perform_later("plain")
    chrono_forge_env.run_all()
    log = ExecutionLog.objects.get(workflow=wf, step_name="durably_execute$call_api")
    assert (log.attempts, log.state) == (2, "completed")
    assert "retry_counts" not in (log.metadata or {})


@pytest.mark.django_db
def test_workflow_level_composite_budget_travels_in_the_continuation(chrono_forge_env):
    wf = w.WorkflowComposite.perform_later("wfc")
    chrono_forge_env.run_due()
    [continuation] = chrono_forge_env.pending
    assert continuation.internal["attempt"] == 1
    assert continuation.internal["retry_counts"] == {"tests.workflows_core.WorkflowLevelError": 1}
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "failed"
    # its own budget (2), not the catch-all's 5
    assert ErrorLog.objects.filter(workflow=wf).count() == 2
    assert w.calls("WorkflowComposite.perform") == 2


@pytest.mark.django_db
def test_an_unbounded_class_policy_stops_retrying_the_whole_workflow_at_the_guard(
    chrono_forge_env,
):
    """An unbounded workflow-level policy must not retry a perform() that always fails forever:
    the run fails after the guard's number of attempts, each recorded."""
    from chrono_forge.executor import WORKFLOW_ATTEMPTS_GUARD
    from chrono_forge.models import ErrorLog
    from tests.workflows_core import FailsForeverUnbounded

    wf = FailsForeverUnbounded.perform_later("forever")
    passes = chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "failed"
    assert passes == WORKFLOW_ATTEMPTS_GUARD == 10
    assert sorted(ErrorLog.objects.filter(workflow=wf).values_list("attempt", flat=True)) == list(
        range(WORKFLOW_ATTEMPTS_GUARD)
    )
