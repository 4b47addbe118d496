"""Liveness: every unfinished workflow is running, scheduled (a due time the overdue sweep
honours), parked on a recorded event, or blocked. Each lost delivery is dropped from the in-memory
queue (``drop_pending``, as a broker that lost it) and the public sweep brings the run home."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command

from chrono_forge import maintenance, tasks
from chrono_forge.executor import token_for
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_liveness as wl

pytestmark = pytest.mark.django_db

MIN = timedelta(minutes=1)
GRACE = 5 * MIN  # RESUME_OVERDUE_GRACE's default


def row(key: str) -> Workflow:
    return Workflow.objects.get(key=key)


def accounted_for() -> list[Workflow]:
    """Idle rows in none of the states the invariant allows (must always be empty)."""
    return [
        w
        for w in Workflow.objects.filter(state="idle")
        if w.next_run_at is None and w.parked_on is None
    ]


def sweep(env, late: timedelta = GRACE + MIN) -> int:
    env.advance(late)
    return Workflow.objects.resume_overdue()


# -- the first delivery ----------------------------------------------------------------------------
def test_a_new_row_is_born_scheduled_and_its_delivery_carries_the_due_time(chrono_forge_env):
    env = chrono_forge_env
    wf = wl.Quick.perform_later("first")
    assert wf.next_run_at == env.now and row("first").next_run_at == env.now
    [run] = env.pending
    assert run.internal == {"token": token_for(env.now)}
    assert list(Workflow.objects.never_started()) == [wf]
    env.run_all()
    assert row("first").state == "completed" and row("first").next_run_at is None


def test_a_lost_first_delivery_is_re_sent_by_the_sweep(chrono_forge_env):
    env = chrono_forge_env
    wl.Quick.perform_later("lost")
    assert env.drop_pending() == 1
    env.advance(GRACE - MIN)
    assert Workflow.objects.resume_overdue() == 0  # not late enough yet
    assert list(Workflow.objects.overdue()) == []
    env.advance(2 * MIN)
    assert list(Workflow.objects.overdue()) == [row("lost")]
    assert Workflow.objects.resume_overdue() == 1
    env.run_all()
    assert row("lost").state == "completed" and wl.CALLS == {"Quick.work:lost": 1}


def test_the_original_first_delivery_arriving_after_the_sweep_exits_quietly(chrono_forge_env):
    env = chrono_forge_env
    wl.Gated.perform_later("late")
    [original] = env.pending
    env.drop_pending()
    assert sweep(env) == 1
    env.run_all()  # the sweep's delivery runs the first pass: parked on the gate
    assert row("late").parked_on == "continue_if$approved"
    tasks.run_workflow(original.job_class, original.key, **original.internal)
    assert wl.CALLS["Gated.is_open"] == 1  # superseded: no second pass


def test_the_maintenance_task_and_the_command_run_the_same_sweep(chrono_forge_env):
    env = chrono_forge_env
    wl.Quick.perform_later("a")
    wl.Quick.perform_later("b")
    env.drop_pending()
    env.advance(GRACE + MIN)
    assert maintenance.resume_overdue() == 1 + 1
    env.drop_pending()
    call_command("chrono_forge", "resume-overdue", "--grace", "1")
    env.run_all()
    assert {row("a").state, row("b").state} == {"completed"}


# -- parked on an event ----------------------------------------------------------------------------
def test_a_parked_run_records_its_gate_and_since_when(chrono_forge_env):
    env = chrono_forge_env
    wl.Gated.perform_later("gate")
    env.run_all()
    parked_at = env.now
    wf = row("gate")
    assert (wf.state, wf.next_run_at, wf.parked_on, wf.parked_since) == (
        "idle",
        None,
        "continue_if$approved",
        parked_at,
    )
    assert list(Workflow.objects.parked()) == [wf]
    assert list(Workflow.objects.overdue(grace=timedelta(0))) == []
    assert accounted_for() == []
    env.advance(30 * MIN)
    wl.Gated.perform_later("gate")  # woken, the gate is still closed: parked again, same since
    env.run_all()
    assert (row("gate").parked_on, row("gate").parked_since) == ("continue_if$approved", parked_at)
    wl.FLAGS["open"] = True
    row("gate").resume()
    env.run_all()
    wf = row("gate")
    assert (wf.state, wf.parked_on, wf.parked_since) == ("completed", None, None)
    assert Workflow.objects.parked().count() == 0


@pytest.mark.parametrize("wake", ["perform_later", "resume"])
def test_a_lost_wake_of_a_parked_run_is_re_sent_by_the_sweep(chrono_forge_env, wake):
    env = chrono_forge_env
    wl.Gated.perform_later("gate")
    env.run_all()
    wl.FLAGS["open"] = True
    if wake == "resume":
        row("gate").resume()
    else:
        wl.Gated.perform_later("gate")
    woken = row("gate")
    assert woken.next_run_at == env.now  # the wake-up is recorded before it is delivered
    assert Workflow.objects.parked().count() == 0  # scheduled now, not parked
    env.drop_pending()
    assert sweep(env) == 1
    env.run_all()
    assert row("gate").state == "completed" and wl.CALLS["Gated.ship"] == 1


def test_a_wake_keeps_an_earlier_due_time(chrono_forge_env):
    env = chrono_forge_env
    wl.Quick.perform_later("due")
    env.drop_pending()
    first_due = row("due").next_run_at
    env.advance(MIN)
    wl.Quick.perform_later("due")  # an existing key: a wake-up
    assert row("due").next_run_at == first_due


# -- operator retries ------------------------------------------------------------------------------
def test_a_lost_retry_delivery_is_re_sent_as_a_retry_by_the_sweep(chrono_forge_env):
    env = chrono_forge_env
    wl.Stalls.perform_later("card")
    env.run_all()
    assert row("card").state == "stalled" and row("card").next_run_at is None
    wl.FLAGS["fixed"] = True
    row("card").retry_later()
    [original] = env.pending
    assert row("card").next_run_at == env.now  # the request is on the row
    env.drop_pending()
    assert sweep(env) == 1
    [resent] = env.pending
    assert resent.internal["retry_workflow"] is True
    env.run_all()
    assert row("card").state == "completed" and wl.CALLS["Stalls.charge"] == 2
    # the original retry delivery arrives at last: the retry already ran, it exits
    tasks.run_workflow(original.job_class, original.key, **original.internal)
    assert wl.CALLS["Stalls.charge"] == 2
    assert ExecutionLog.objects.filter(step_name__startswith="$workflow_retry$").count() == 1


def test_a_duplicate_retry_delivery_does_not_retry_twice(chrono_forge_env):
    env = chrono_forge_env
    wl.Stalls.perform_later("card")
    env.run_all()
    row("card").retry_later()
    [delivery] = env.pending
    env.run_all()  # the retry runs and stalls again (not fixed)
    assert row("card").state == "stalled" and wl.CALLS["Stalls.charge"] == 2
    tasks.run_workflow(delivery.job_class, delivery.key, **delivery.internal)  # redelivered
    assert wl.CALLS["Stalls.charge"] == 2 and row("card").state == "stalled"


def test_a_blocked_row_without_a_retry_request_is_not_retried_by_the_sweep(chrono_forge_env):
    env = chrono_forge_env
    wl.Stalls.perform_later("card")
    env.run_all()
    assert sweep(env, late=24 * 60 * MIN) == 0
    assert row("card").state == "stalled"


# -- merge polls -----------------------------------------------------------------------------------
def pollers(env):
    return [run for run in env.pending if run.func == "chrono_forge.tasks.poll_merge"]


def run_children_to_their_nap(env):
    """The parent's first pass and each child's first pass (parked on its 60 s nap)."""
    wl.Fan.perform_later("fan")
    env.run_due()
    assert Workflow.objects.filter(key__startswith="fan$", started_at__isnull=False).count() == 3


def drop_pollers(env):
    return env.drop_pending(lambda run: run.is_merge_poll)


def test_a_merge_poller_lost_before_its_first_poll_is_re_armed_by_the_sweep(chrono_forge_env):
    env = chrono_forge_env
    run_children_to_their_nap(env)
    [poller] = pollers(env)
    parent = row("fan")
    assert parent.next_run_at == poller.run_at and parent.parked_on is None
    assert drop_pollers(env) == 1
    env.run_all()  # the children finish; nobody wakes the parent
    assert Workflow.objects.filter(key__startswith="fan$", state="completed").count() == 3
    assert row("fan").state == "idle" and wl.CALLS.get("Fan.after") is None
    assert list(Workflow.objects.overdue()) == []
    env.travel_to(poller.run_at + GRACE + timedelta(seconds=1))
    assert list(Workflow.objects.overdue()) == [row("fan")]  # the lost poll is overdue
    assert Workflow.objects.resume_overdue() == 1
    env.run_all()
    assert row("fan").state == "completed" and wl.CALLS["Fan.after"] == 1


def test_a_merge_poller_lost_after_its_first_poll_is_re_armed_by_the_sweep(chrono_forge_env):
    env = chrono_forge_env
    run_children_to_their_nap(env)
    [poller] = pollers(env)
    env.travel_to(poller.run_at)
    env.run_due()  # the first poll: the children still nap -> the next poll is scheduled
    [second] = pollers(env)
    assert second.run_at > poller.run_at
    assert row("fan").next_run_at == second.run_at  # the parent is due with the next poll
    assert drop_pollers(env) == 1
    env.run_all()
    assert row("fan").state == "idle"
    env.travel_to(second.run_at + GRACE)
    assert Workflow.objects.resume_overdue() == 0  # late, but not past the grace
    env.advance(1)
    assert Workflow.objects.resume_overdue() == 1
    env.run_all()
    assert row("fan").state == "completed" and wl.CALLS["Fan.after"] == 1
    assert wl.CALLS["Napper.work"] == 3


def test_a_re_armed_merge_with_children_still_running_gets_a_new_poller(chrono_forge_env):
    env = chrono_forge_env
    run_children_to_their_nap(env)
    [old] = pollers(env)
    drop_pollers(env)
    env.advance(20)  # the poll was due 15 s ago; the children nap until +60 s
    assert Workflow.objects.resume_overdue(grace=timedelta(seconds=10)) == 1  # the parent only
    env.run_due()  # the replayed merge re-arms a poller with a new token
    [new] = pollers(env)
    assert new.args[1] != old.args[1] and row("fan").next_run_at == new.run_at
    assert tasks.poll_merge(*old.args, **old.kwargs) == "superseded"
    env.run_all()
    assert row("fan").state == "completed" and wl.CALLS["Fan.after"] == 1


def test_a_healthy_poller_keeps_the_parent_from_being_overdue(chrono_forge_env):
    env = chrono_forge_env
    run_children_to_their_nap(env)
    polls = 0
    while pollers(env) and row("fan").state != "completed":
        [poller] = pollers(env)
        env.travel_to(poller.run_at + timedelta(seconds=1))  # each poll a second late
        assert list(Workflow.objects.overdue()) == []
        env.run_due()
        polls += 1
    assert polls == 2  # at +5 s (the children nap) and +305 s (they are done)
    env.run_all()
    assert row("fan").state == "completed"


def test_children_are_born_scheduled(chrono_forge_env):
    env = chrono_forge_env
    wl.Fan.perform_now("fan")
    children = Workflow.objects.filter(key__startswith="fan$")
    assert children.count() == 3
    assert set(children.values_list("next_run_at", flat=True)) == {env.now}
    env.drop_pending()  # every child's first delivery is lost (and the poller)
    env.advance(GRACE + MIN)
    assert Workflow.objects.resume_overdue() == 3 + 1  # the children and the parent's merge poll
    env.run_all()
    assert row("fan").state == "completed" and wl.CALLS["Napper.work"] == 3


def test_the_rekick_threshold_is_a_setting(chrono_forge_env, settings):
    from chrono_forge import merge_poller

    env = chrono_forge_env
    wl.Fan.perform_now("fan")
    [poller] = pollers(env)
    env.drop_pending()  # the children's first deliveries are lost
    settings.CHRONO_FORGE = {"CHILD_REKICK_AFTER": 30}
    env.travel_to(poller.run_at)  # 5 s later: not stale yet
    merge_poller.poll(*poller.args, **poller.kwargs)
    assert [run for run in env.pending if run.is_workflow_pass] == []
    [poller] = pollers(env)
    env.drop_pending()
    env.advance(40)
    merge_poller.poll(*poller.args, **poller.kwargs)
    assert len([run for run in env.pending if run.is_workflow_pass]) == 3


@pytest.mark.parametrize("value", [0, -5, "5 minutes", True, timedelta(0)])
def test_e030_rejects_a_bad_child_rekick_after(settings, value):
    from chrono_forge.checks import check_settings

    settings.CHRONO_FORGE = {"CHILD_REKICK_AFTER": value}
    [error] = check_settings()
    assert error.id == "chrono_forge.E030" and "CHILD_REKICK_AFTER" in error.msg
    settings.CHRONO_FORGE = {"CHILD_REKICK_AFTER": timedelta(minutes=1)}
    assert check_settings() == []


# -- reap below MAX_DURATION -----------------------------------------------------------------------
def stranded(env, key: str, lock_age: timedelta) -> Workflow:
    wf = wl.Quick.perform_later(key)
    env.drop_pending()
    Workflow.objects.filter(pk=wf.pk).update(
        state="running", locked_by="dead-run", locked_at=env.now - lock_age, started_at=env.now
    )
    return wf


def test_reap_with_a_threshold_below_max_duration_steals_the_lock(chrono_forge_env):
    env = chrono_forge_env
    stranded(env, "k", lock_age=2 * MIN)  # MAX_DURATION is 10 minutes
    assert Workflow.objects.reap_stalled(stale_after=MIN) == 1
    [run] = env.pending
    assert run.internal == {"stale_after": 60.0}
    env.run_all()
    assert row("k").state == "completed" and wl.CALLS == {"Quick.work:k": 1}


def test_the_reap_command_below_max_duration_steals_the_lock(chrono_forge_env, capsys):
    env = chrono_forge_env
    stranded(env, "k", lock_age=3 * MIN)
    call_command("chrono_forge", "reap", "--stale-after", "2")
    assert "Re-enqueued 1" in capsys.readouterr().out
    env.run_all()
    assert row("k").state == "completed"


def test_a_reaped_delivery_never_steals_a_lock_younger_than_its_threshold(chrono_forge_env):
    env = chrono_forge_env
    stranded(env, "k", lock_age=2 * MIN)
    Workflow.objects.reap_stalled(stale_after=MIN)
    [run] = env.pending
    env.drop_pending()
    Workflow.objects.filter(key="k").update(locked_by="live-run", locked_at=env.now)  # retaken
    tasks.run_workflow(run.job_class, run.key, **run.internal)
    wf = row("k")
    assert (wf.state, wf.locked_by, wf.wake_requested) == ("running", "live-run", True)
    assert wl.CALLS == {}


def test_a_plain_delivery_leaves_a_lock_younger_than_max_duration(chrono_forge_env):
    env = chrono_forge_env
    stranded(env, "k", lock_age=2 * MIN)
    tasks.run_workflow("tests.workflows_liveness.Quick", "k")
    assert row("k").locked_by == "dead-run" and wl.CALLS == {}


@pytest.mark.parametrize("value", [0, -1, "60", True])
def test_a_bad_reap_threshold_in_a_delivery_is_refused(chrono_forge_env, caplog, value):
    env = chrono_forge_env
    stranded(env, "k", lock_age=2 * MIN)
    # refused at the task's door (one log line, no exception for django-q2 to redeliver)
    assert tasks.run_workflow("tests.workflows_liveness.Quick", "k", stale_after=value) is None
    assert "stale_after must be a number of seconds" in caplog.text
    assert row("k").locked_by == "dead-run"


# -- the invariant over a mixed run ----------------------------------------------------------------
def test_no_idle_row_is_ever_unaccounted_for(chrono_forge_env):
    env = chrono_forge_env
    wl.Quick.perform_later("q")
    wl.Gated.perform_later("g")
    wl.Stalls.perform_later("s")
    wl.Fan.perform_later("f")
    assert accounted_for() == []
    while env.pending:
        run = env.pending[0]
        env.travel_to(max(env.now, run.run_at))
        env.dispatcher.pop_due(env.now)
        env._run(run)
        assert accounted_for() == [], [(w.key, w.state) for w in accounted_for()]
    assert {w.key: w.state for w in Workflow.objects.filter(parent_execution_log=None)} == {
        "q": "completed",
        "g": "idle",
        "s": "stalled",
        "f": "completed",
    }


# -- budgets ---------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_due_times_and_parking_cost_no_extra_statement(chrono_forge_env):
    from tests.core_sql import WORKFLOW, SqlLog

    env = chrono_forge_env
    with SqlLog() as admit:
        wl.Gated.perform_later("budget")
    assert (len(admit.data_statements), admit.commits) == (2, 1), admit.dump()  # S + I
    with SqlLog() as park:
        env.run_all()
    # lock S+U, the gate's INSERT, the release U (which records the park): 4, as before
    assert len(park.data_statements) == 4, park.dump()
    assert park.count("UPDATE", WORKFLOW) == 2
    assert row("budget").parked_on == "continue_if$approved"
    with SqlLog() as wake:
        wl.Gated.perform_later("budget")
    # an existing key: the lookup and the wake-up's one UPDATE (due time or wake_requested)
    assert [(s.kind, s.table) for s in wake.data_statements] == [
        ("SELECT", WORKFLOW),
        ("UPDATE", WORKFLOW),
    ]
    assert wake.commits == 1


def test_drop_pending_can_lose_only_some_deliveries(chrono_forge_env):
    env = chrono_forge_env
    wl.Quick.perform_later("a")
    wl.Quick.perform_later("b")
    assert env.drop_pending(lambda run: run.key == "a") == 1
    assert [run.key for run in env.pending] == ["b"]
    assert env.drop_pending(lambda run: run.is_merge_poll) == 0
    assert env.drop_pending() == 1 and env.pending == []
