"""The branch probe (child counts) and the merge poller (wake-up, fencing, rekick, admin metadata
and cadence).

Each test parks a real parent at its merge (one inline pass), drops the queued children and poller,
shapes the children's rows, and then drives ``merge_poller.poll`` by hand on the fake clock.
"""

from datetime import datetime, timedelta

import pytest
from django.db import OperationalError

from chrono_forge import merge_poller, tasks
from chrono_forge.merge_poller import count_children, next_delay
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_branches as wb
from tests.core_sql import capture

pytestmark = pytest.mark.django_db

PARENT = "tests.workflows_branches.FanOut"
POLL = "chrono_forge.tasks.poll_merge"


def arm(env, n=1, key="p"):
    """The parent's first pass (parks at its merge), with the queue emptied: -> the branch log."""
    wb.FanOut.perform_now(key, source="list", n=n)
    assert Workflow.objects.get(key=key).state == "idle"
    env.drop_pending()
    return branch_log(key)


def log_of(key, step_name):
    return ExecutionLog.objects.get(workflow__key=key, step_name=step_name)


def branch_log(key="p"):
    return ExecutionLog.objects.get(workflow__key=key, step_name="branch$grp")


def merge_log(key="p"):
    return ExecutionLog.objects.get(workflow__key=key, step_name="merge$grp")


def poll(log, token=None, **kwargs):
    """One poll of the merge over branch log ``log``, with its current token unless given."""
    log.refresh_from_db()
    token = token or log.metadata["poll_token"]
    return merge_poller.poll(merge_log(log.workflow.key).pk, token, **kwargs)


def child(index=0, key="p"):
    return Workflow.objects.filter(key=f"{key}$grp$items_{index}")


def shape(env, index, state, *, started_ago=None, modified_ago=timedelta(0), key="p"):
    """Give child ``index`` a state, a started_at (None: never started) and a last-touched time."""
    child(index, key).update(
        state=state,
        started_at=None if started_ago is None else env.now - started_ago,
        modified=env.now - modified_ago,
    )


def passes(env):
    return [(run.job_class, run.key) for run in env.pending if run.is_workflow_pass]


def pollers(env):
    return [run for run in env.pending if run.func == POLL]


def poll_state(log):
    log.refresh_from_db()
    return log.metadata["poll"]


def seconds_until(env, run):
    return (run.run_at - env.now).total_seconds()


STALE = timedelta(minutes=10)


# -- the probe's counts ----------------------------------------------------------------------------
def test_progressing_counts_running_and_never_started_children(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=2)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    counts = count_children([log.pk])[log.pk]
    assert counts.progressing == 2 and counts.running == 1 and counts.never_started == 1


def test_waiting_blocked_and_completed_children_are_not_progressing(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=4)
    shape(env, 0, "idle", started_ago=timedelta(minutes=1))  # waiting
    shape(env, 1, "failed", started_ago=timedelta(minutes=1))
    shape(env, 2, "stalled", started_ago=timedelta(minutes=1))
    shape(env, 3, "completed", started_ago=timedelta(minutes=1))
    counts = count_children([log.pk])[log.pk]
    assert counts.progressing == 0
    assert counts.pending == 3  # "incomplete": failed, stalled and waiting still count
    assert (counts.waiting, counts.blocked, counts.running, counts.never_started) == (1, 2, 0, 0)


def test_running_means_state_running_and_never_started_means_idle_without_started_at(
    chrono_forge_env,
):
    env = chrono_forge_env
    log = arm(env, n=3)
    shape(env, 0, "idle")  # never started
    shape(env, 1, "idle", started_ago=timedelta(seconds=5))  # waiting
    shape(env, 2, "running", started_ago=timedelta(seconds=1))
    counts = count_children([log.pk])[log.pk]
    assert counts.running == 1 and counts.never_started == 1 and counts.waiting == 1


def test_counts_are_one_grouped_query_whatever_the_number_of_branches(chrono_forge_env):
    env = chrono_forge_env
    wb.TwoBranches.perform_now("t")
    env.drop_pending()
    ids = list(
        ExecutionLog.objects.filter(step_name__startswith="branch$")
        .order_by("step_name")
        .values_list("pk", flat=True)
    )
    with capture() as queries:
        counts = count_children(ids)
    assert len(queries.captured_queries) == 1
    assert [counts[pk].never_started for pk in ids] == [1, 2]


# -- wake or reschedule ----------------------------------------------------------------------------
def test_all_children_completed_wakes_the_parent_with_its_key_only(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    assert poll(log) == "woke"
    [wake] = env.pending
    assert (wake.job_class, wake.key, wake.kwargs) == (PARENT, "p", {})
    env.run_all()
    assert Workflow.objects.get(key="p").state == "completed"


def test_a_running_child_reschedules_the_poller_and_does_not_wake(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    assert poll(log) == "rescheduled"
    assert passes(env) == []
    [again] = pollers(env)
    assert again.args == (merge_log().pk, log.metadata["poll_token"])


def test_an_unsealed_branch_is_not_merged_even_with_every_child_completed(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    ExecutionLog.objects.filter(pk=log.pk).update(state="pending")
    assert poll(log) == "rescheduled"
    assert passes(env) == [] and len(pollers(env)) == 1
    assert poll_state(log)["sealed"] is False and poll_state(log)["spawned"] is None


def test_a_wake_up_racing_the_parents_own_pass_is_delivered_when_it_releases(chrono_forge_env):
    from chrono_forge.executor import Delivery

    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    # a pass of the parent is still running (e.g. it is parking at the merge)
    holder = Delivery(wb.FanOut, "p").acquire()
    assert holder is not None
    assert poll(log) == "woke"
    env.run_due()  # the wake-up loses the lock race...
    assert Workflow.objects.get(key="p").state == "running"
    holder.release("idle")
    holder.publish()  # ...and the holder publishes it on release
    env.run_all()
    assert Workflow.objects.get(key="p").state == "completed"


def test_a_merge_the_parent_already_resolved_stops_the_poller(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    merge = ExecutionLog.objects.get(step_name="merge$grp")
    ExecutionLog.objects.filter(pk=merge.pk).update(state="completed")
    assert poll(log) == "merged"
    assert env.pending == [] and "poll" not in branch_log().metadata


def test_deleted_branch_logs_stop_the_poller(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    token = log.metadata["poll_token"]
    Workflow.objects.filter(key__startswith="p$").delete()
    ExecutionLog.objects.filter(pk=log.pk).delete()
    assert merge_poller.poll(merge_log().pk, token) == "gone"
    assert env.pending == []


# -- rekick ----------------------------------------------------------------------------------------
def test_a_stale_never_started_child_is_rekicked(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "idle", modified_ago=STALE)
    poll(log)
    assert passes(env) == [("tests.workflows_branches.Leaf", "p$grp$items_0")]
    assert child(0).get().modified == env.now  # touched: the debounce


def test_a_rekicked_child_runs_to_completion(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "idle", modified_ago=STALE)
    poll(log)
    env.run_all()
    assert child(0).get().state == "completed" and wb.RUNS == {"p$grp$items_0": 1}
    assert Workflow.objects.get(key="p").state == "completed"


@pytest.mark.parametrize(
    "state, started_ago, modified_ago",
    [
        ("running", timedelta(minutes=20), STALE),  # 131: running and stale: only reschedule
        ("idle", None, timedelta(minutes=1)),  # 135: never started, but touched 1 min ago
        ("failed", timedelta(minutes=20), STALE),  # 136: blocked children need an operator
        ("stalled", timedelta(minutes=20), STALE),
        ("idle", timedelta(minutes=20), STALE),  # 137: waiting: started_at decides, not staleness
    ],
)
def test_children_that_must_not_be_rekicked(chrono_forge_env, state, started_ago, modified_ago):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, state, started_ago=started_ago, modified_ago=modified_ago)
    assert poll(log) == "rescheduled"
    assert passes(env) == [] and len(pollers(env)) == 1
    assert poll_state(log)["rekicked"] == 0


def test_at_most_200_children_are_rekicked_per_poll(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=merge_poller.REKICK_BATCH + 5)
    Workflow.objects.filter(key__startswith="p$").update(modified=env.now - STALE)
    poll(log)
    assert len(passes(env)) == 200
    assert poll_state(log)["rekicked"] == 200


def test_rekick_bookkeeping_and_debounce(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=2)
    shape(env, 0, "idle", modified_ago=STALE)  # A
    shape(env, 1, "running", started_ago=timedelta(seconds=1))
    poll(log)
    first = poll_state(log)
    assert (first["rekicked"], first["rekick_total"]) == (1, 1)
    assert first["last_rekick_at"] == env.now.isoformat()
    kicked_at = env.now
    env.drop_pending()

    env.advance(timedelta(seconds=5))
    poll(log)  # A was touched by the rekick: not rekicked again
    second = poll_state(log)
    assert passes(env) == []
    assert (second["rekicked"], second["rekick_total"]) == (0, 1)
    assert second["last_rekick_at"] == kicked_at.isoformat()  # kept, not cleared

    # A new stale never-started child B joins: the total accumulates.
    Workflow.objects.create(
        job_class="tests.workflows_branches.Leaf",
        key="p$grp$extra",
        state="idle",
        parent_execution_log_id=log.pk,
        created=env.now - STALE,
        modified=env.now - STALE,
    )
    env.drop_pending()
    poll(log)
    third = poll_state(log)
    assert passes(env) == [("tests.workflows_branches.Leaf", "p$grp$extra")]
    assert (third["rekicked"], third["rekick_total"]) == (1, 2)


# -- the rekick gate is the never-started count ----------------------------------------------------
def previous_poll(log, **values):
    metadata = dict(log.metadata)
    metadata["poll"] = {**metadata.get("poll", {}), **values}
    ExecutionLog.objects.filter(pk=log.pk).update(metadata=metadata)


def test_a_dropping_never_started_count_means_draining_no_rekick(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "idle", modified_ago=STALE)
    previous_poll(log, never_started=5, pending=5)
    poll(log)
    assert passes(env) == []


def test_a_flat_never_started_count_rekicks(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "idle", modified_ago=STALE)
    previous_poll(log, never_started=1, pending=1)
    poll(log)
    assert passes(env) == [("tests.workflows_branches.Leaf", "p$grp$items_0")]


def test_pending_dropping_does_not_close_the_gate(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=2)
    shape(env, 0, "idle", modified_ago=STALE)
    shape(env, 1, "completed", started_ago=STALE)  # a waiting child completed: pending 2 -> 1
    previous_poll(
        log,
        never_started=1,
        pending=2,
        last_polled_at=(env.now - timedelta(seconds=30)).isoformat(),
    )
    poll(log)
    assert passes(env) == [("tests.workflows_branches.Leaf", "p$grp$items_0")]


# -- the admin-facing poll metadata ----------------------------------------------------------------
def test_each_poll_records_its_facts_on_the_branch_log(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    poll(log)
    state = poll_state(log)
    assert state["pending"] == 1 and state["spawned"] == 1 and state["sealed"] is True
    assert state["never_started"] == 0 and state["running"] == 1 and state["blocked"] == 0
    assert state["last_polled_at"] == env.now.isoformat()
    assert state["next_poll_at"] == (env.now + timedelta(seconds=5)).isoformat()
    assert state["polls"] == 1
    assert state["rate"] is None and state["eta_seconds"] is None  # one sample: no rate yet


def test_spawned_is_counted_once_at_seal_and_cached(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    poll(log)
    Workflow.objects.create(
        job_class="tests.workflows_branches.Leaf",
        key="p$grp$late",
        state="running",
        parent_execution_log_id=log.pk,
        created=env.now,
        modified=env.now,
    )
    with capture() as queries:
        poll(log)
    assert poll_state(log)["spawned"] == 1
    assert poll_state(log)["pending"] == 2
    counts = [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1  # the grouped count of incomplete children; spawned is not recounted


def test_the_poll_state_sits_next_to_the_cursors(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    metadata = {**log.metadata, "cursors": {"items": {"pk": 42}}}
    ExecutionLog.objects.filter(pk=log.pk).update(metadata=metadata)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    poll(log)
    log.refresh_from_db()
    assert log.metadata["cursors"] == {"items": {"pk": 42}}
    assert log.metadata["sealed"] is True and log.metadata["automerge"] is True
    assert log.metadata["poll"]["polls"] == 1


def test_the_wake_poll_records_the_final_state(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    poll(log)
    state = poll_state(log)
    assert state["pending"] == 0 and state["sealed"] is True and state["next_poll_at"] is None


def test_the_polls_counter_accumulates(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    poll(log)
    env.advance(timedelta(seconds=5))
    poll(log)
    assert poll_state(log)["polls"] == 2


def test_a_drain_records_rate_and_eta_and_sets_the_cadence(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=40)
    previous_poll(
        log,
        pending=50,
        never_started=50,
        last_polled_at=(env.now - timedelta(seconds=60)).isoformat(),
    )
    poll(log)
    state = poll_state(log)
    assert state["rate"] == pytest.approx(10 / 60)
    assert state["eta_seconds"] == pytest.approx(240)
    [again] = pollers(env)
    assert seconds_until(env, again) == pytest.approx(120, abs=8)


# -- fencing ---------------------------------------------------------------------------------------
def test_a_superseded_poller_does_nothing_at_all(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "idle", modified_ago=STALE)  # would be rekicked
    ExecutionLog.objects.filter(pk=log.pk).update(
        metadata={**log.metadata, "poll_token": "current"}
    )
    before = branch_log().metadata
    merge = merge_log()
    with capture() as queries:
        assert merge_poller.poll(merge.pk, "stale") == "superseded"
    assert env.pending == []  # no reschedule, no wake, no rekick
    assert branch_log().metadata == before  # poll_token untouched, no "poll" written
    assert "poll" not in before
    assert len(queries.captured_queries) == 1


def test_the_current_token_keeps_polling(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    token = log.metadata["poll_token"]
    assert poll(log, token=token) == "rescheduled"
    [again] = pollers(env)
    assert again.args[1] == token


def test_a_re_armed_merge_retires_the_old_poller(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    old = log.metadata["poll_token"]
    Workflow.objects.get(key="p").resume()  # an operator's resume re-arms with a fresh token
    env.run_due()  # the parent's pass: its child never ran, so it parks again
    new = branch_log().metadata["poll_token"]
    assert new != old
    env.drop_pending()
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    assert poll(log, token=old) == "superseded"
    assert poll(log, token=new) == "woke"


def test_a_token_that_changes_while_counting_aborts_the_write(chrono_forge_env, monkeypatch):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    real = merge_poller.count_children

    def rearmed_meanwhile(ids):
        ExecutionLog.objects.filter(pk=log.pk).update(
            metadata={**log.metadata, "poll_token": "newer"}
        )
        return real(ids)

    monkeypatch.setattr(merge_poller, "count_children", rearmed_meanwhile)
    assert poll(log) == "superseded"
    assert env.pending == [] and "poll" not in branch_log().metadata


# -- transient errors and bad arguments ------------------------------------------------------------
def test_a_transient_database_error_reschedules_with_polynomial_backoff(
    chrono_forge_env, monkeypatch
):
    env = chrono_forge_env
    log = arm(env)
    token = log.metadata["poll_token"]

    def deadlock(ids):
        raise OperationalError("deadlock detected")

    monkeypatch.setattr(merge_poller, "count_children", deadlock)
    assert poll(log, attempt=2) == "retrying"
    [retry] = pollers(env)
    assert retry.kwargs["attempt"] == 3
    assert seconds_until(env, retry) == 3**4 + 2
    assert retry.args == (merge_log().pk, token)
    env.drop_pending()
    with pytest.raises(OperationalError):
        poll(log, attempt=merge_poller.TRANSIENT_ATTEMPTS - 1)  # the 25th attempt gives up loudly
    assert env.pending == []


def test_an_empty_branch_list_is_refused(chrono_forge_env, caplog):
    assert tasks.poll_merge(PARENT, "p", [], "token") == "refused"
    assert "branch_log_ids must be a list of 1 to" in caplog.text
    assert chrono_forge_env.pending == []


def test_the_task_entry_point_runs_a_poll(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    assert tasks.poll_merge(merge_log().pk, log.metadata["poll_token"]) == "woke"


def test_a_poll_queued_by_an_earlier_version_still_polls_and_re_arms_in_the_new_form(
    chrono_forge_env,
):
    env = chrono_forge_env
    log = arm(env)
    token = log.metadata["poll_token"]
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    legacy = (PARENT, "p", [log.pk], token, 5.0, 300.0)
    assert tasks.poll_merge(*legacy, merge_log_id=merge_log().pk) == "rescheduled"
    [again] = pollers(env)
    assert again.args == (merge_log().pk, token) and again.kwargs == {}
    env.drop_pending()
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    assert tasks.poll_merge(*legacy) == "woke"  # the oldest form, without merge_log_id
    assert passes(env) == [(PARENT, "p")]


def test_a_legacy_poll_with_a_stale_token_is_superseded(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "completed", started_ago=timedelta(seconds=1))
    assert tasks.poll_merge(PARENT, "p", [log.pk], "stale", 5.0, 300.0) == "superseded"
    assert tasks.poll_merge(PARENT, "p", [log.pk], "stale", merge_log_id=merge_log().pk) == (
        "superseded"
    )
    assert env.pending == []


def test_the_intervals_come_from_the_merge_log(chrono_forge_env):
    env = chrono_forge_env
    wb.MergeCall.perform_now(
        "m", names=["a"], merge_options={"min_interval": 2, "max_interval": 60}
    )
    env.drop_pending()
    merge = log_of("m", "merge$a")
    Workflow.objects.filter(key__startswith="m$").update(state="running", started_at=env.now)
    assert merge_poller.poll(merge.pk, merge.metadata["poll_token"]) == "rescheduled"
    [again] = pollers(env)
    assert seconds_until(env, again) == 2.0  # a running child: the stored min_interval


def test_a_poll_of_a_deleted_merge_log_stops(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    token, merge = log.metadata["poll_token"], merge_log()
    Workflow.objects.filter(key="p").delete()  # the parent, its logs and its children
    assert merge_poller.poll(merge.pk, token) == "gone"
    assert env.pending == []


# -- the poll's statements do not grow with the number of children ---------------------------------
@pytest.mark.parametrize("stale", [False, True])
def test_a_poll_costs_the_same_for_3_and_30_children(chrono_forge_env, stale):
    env = chrono_forge_env
    sizes = {}
    for key, n in (("small", 3), ("large", 30)):
        log = arm(env, n=n, key=key)
        if stale:
            Workflow.objects.filter(key__startswith=f"{key}$").update(modified=env.now - STALE)
        with capture() as queries:
            poll(log)
        sizes[n] = len(queries.captured_queries)
    assert sizes[3] == sizes[30]


# -- cadence ---------------------------------------------------------------------------------------
def delay(**kwargs):
    base = {
        "pending": 0,
        "running": 0,
        "never_started": 0,
        "rate": None,
        "previous": None,
        "low": 5.0,
        "high": 300.0,
    }
    return next_delay(**{**base, **kwargs})


def test_cadence_from_the_drain_rate():
    assert delay(pending=800, rate=20.0, running=1) == 20.0  # ETA 40 s x 0.5
    assert delay(pending=10**6, rate=1.0, running=1) == 300.0  # clamped to max
    assert delay(pending=1, rate=100.0, running=1) == 5.0  # clamped to min


@pytest.mark.parametrize("previous", [None, 5.0, 40.0, 200.0])
def test_cadence_without_drain_and_a_running_child_is_the_floor(previous):
    assert delay(pending=1, running=1, rate=0.0, previous=previous) == 5.0


@pytest.mark.parametrize("previous, expected", [(None, 5.0), (5.0, 10.0), (200.0, 300.0)])
def test_cadence_with_only_never_started_children_backs_off_exponentially(previous, expected):
    assert delay(pending=3, never_started=3, previous=previous) == expected


def test_cadence_when_nothing_can_progress_is_the_ceiling():
    assert delay(pending=2) == 300.0  # only waiting or blocked children


def test_only_blocked_children_back_off_to_max_interval(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=2)
    shape(env, 0, "failed", started_ago=STALE)
    shape(env, 1, "stalled", started_ago=STALE)
    poll(log)
    [again] = pollers(env)
    assert seconds_until(env, again) == pytest.approx(300, abs=2)


def test_only_a_waiting_child_polls_slower_than_the_floor(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "idle", started_ago=timedelta(minutes=1))
    poll(log)
    [again] = pollers(env)
    assert seconds_until(env, again) > 5


def test_one_running_child_keeps_the_floor_despite_failed_siblings(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env, n=6)
    for index in range(5):
        shape(env, index, "failed", started_ago=STALE)
    shape(env, 5, "running", started_ago=timedelta(seconds=1))
    poll(log)
    [again] = pollers(env)
    assert seconds_until(env, again) == pytest.approx(5, abs=1)


def test_a_running_child_without_drain_resets_a_backed_off_interval(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    shape(env, 0, "running", started_ago=timedelta(seconds=1))
    polled = env.now - timedelta(seconds=40)
    previous_poll(
        log,
        pending=1,
        never_started=0,
        last_polled_at=polled.isoformat(),
        next_poll_at=env.now.isoformat(),
    )
    poll(log)
    [again] = pollers(env)
    assert seconds_until(env, again) == pytest.approx(5, abs=1)


def test_never_started_children_back_off_from_the_stored_interval(chrono_forge_env):
    env = chrono_forge_env
    log = arm(env)
    polled = env.now - timedelta(seconds=20)
    previous_poll(
        log,
        pending=1,
        never_started=2,
        last_polled_at=polled.isoformat(),
        next_poll_at=env.now.isoformat(),
    )
    poll(log)
    [again] = pollers(env)
    assert seconds_until(env, again) == 40  # the previous 20 s interval, doubled
    assert datetime.fromisoformat(poll_state(log)["next_poll_at"]) == again.run_at
