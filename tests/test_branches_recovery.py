"""branch crash recovery, with one-shot faults injected by monkeypatch.

A spawn_each batch is one transaction (bulk INSERT, SELECT of the still-idle keys, bulk enqueue,
cursor UPDATE): a crash anywhere inside it rolls the whole batch back, a crash after it resumes from
its cursor. States the reference reaches between separate commits (rows inserted but never enqueued)
are reproduced by writing those rows as the crash would have left them.
"""

from datetime import timedelta

import pytest

from chrono_forge import dispatch
from chrono_forge.models import ExecutionLog, Workflow
from chrono_forge.steps import StepLogs
from tests import workflows_branches as wb

pytestmark = pytest.mark.django_db


class SimulatedCrash(RuntimeError):
    pass


def one_shot(monkeypatch, owner, name, *, when=lambda *args, **kwargs: True, skip=0, drop=False):
    """Make ``owner.name`` fail once: on the first call matching ``when`` after ``skip`` matching
    calls. ``drop=True`` swallows the call instead of raising (a lost enqueue)."""
    original = getattr(owner, name)
    state = {"matched": 0, "fired": False}

    def faulty(*args, **kwargs):
        if not state["fired"] and when(*args, **kwargs):
            state["matched"] += 1
            if state["matched"] > skip:
                state["fired"] = True
                if drop:
                    return None
                raise SimulatedCrash(f"simulated crash in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return state


def cursor_advance(self, log, **fields):
    return "cursors" in (fields.get("metadata") or {}) and "state" not in fields


def branch_log(key="p"):
    return ExecutionLog.objects.get(workflow__key=key, step_name="branch$grp")


def assert_fan_out_converged(n=25, key="p"):
    children = Workflow.objects.filter(key__startswith=f"{key}$grp$")
    keys = list(children.values_list("key", flat=True))
    assert len(keys) == n and len(set(keys)) == n
    assert not children.filter(state__in=["failed", "stalled", "idle", "running"]).exists()
    assert set(children.values_list("parent_execution_log_id", flat=True)) == {branch_log(key).pk}
    assert wb.RUNS == {
        k: 1 for k in keys
    }  # every child ran exactly once: nothing re-enqueued after it ran
    assert Workflow.objects.get(key=key).state == "completed"
    assert wb.EVENTS["FanOut.finalize"] == 1


def source_kwargs(source):
    if source == "groups":
        wb.seed_groups(25)
    return {"source": source, "n": 25, "of": 10}


# -- crash before the first cursor advance ---------------------------------------------------------
@pytest.mark.parametrize("source", ["groups", "list"])
def test_crash_before_the_first_cursor_advance_restarts_the_stream(
    chrono_forge_env, monkeypatch, source
):
    env = chrono_forge_env
    fault = one_shot(monkeypatch, StepLogs, "update", when=cursor_advance)
    wb.FanOut.perform_later("p", **source_kwargs(source))
    env.run_due()
    assert fault["fired"]
    # The batch was one transaction: no child row, no child job, no cursor survived the crash.
    assert "cursors" not in branch_log().metadata or branch_log().metadata["cursors"] == {}
    assert not Workflow.objects.filter(key__startswith="p$").exists()
    assert [run.key for run in env.pending] == ["p"]  # the workflow-level retry
    env.run_all()
    assert_fan_out_converged()


# -- crash after the first cursor advance ----------------------------------------------------------
@pytest.mark.parametrize("source, cursor_key", [("groups", "pk"), ("list", "index")])
def test_crash_after_the_first_cursor_advance_resumes_from_the_cursor(
    chrono_forge_env, monkeypatch, source, cursor_key
):
    env = chrono_forge_env
    kwargs = source_kwargs(source)
    fault = one_shot(monkeypatch, dispatch, "enqueue_many", skip=1)  # the second batch crashes
    wb.FanOut.perform_later("p", **kwargs)
    env.run_due()
    assert fault["fired"]
    cursor = branch_log().metadata["cursors"]["items"]
    first_batch = Workflow.objects.filter(key__startswith="p$grp$")
    assert first_batch.count() == 10
    if source == "groups":
        assert cursor == {"pk": max(first_batch.values_list("kwargs__item", flat=True))}
    else:
        assert cursor == {"index": 10}
    assert set(first_batch.values_list("state", flat=True)) == {"completed"}  # they already ran
    env.run_all()
    assert_fan_out_converged()


# -- crash between the bulk INSERT and the bulk enqueue --------------------------------------------
def test_crash_between_insert_and_enqueue_rolls_the_batch_back(chrono_forge_env, monkeypatch):
    env = chrono_forge_env
    fault = one_shot(monkeypatch, dispatch, "enqueue_many")
    wb.FanOut.perform_later("p", source="list", n=25, of=10)
    env.run_due()
    assert fault["fired"]
    assert not Workflow.objects.filter(key__startswith="p$").exists()
    env.run_all()
    assert_fan_out_converged()


def test_rows_inserted_but_never_enqueued_are_enqueued_on_resume(chrono_forge_env, monkeypatch):
    """The state a crash between two separate commits leaves (rows in, no job, no cursor): the
    re-offered batch inserts nothing new and enqueues the still-idle rows."""
    env = chrono_forge_env
    one_shot(monkeypatch, dispatch, "enqueue_many")
    wb.FanOut.perform_later("p", source="list", n=25, of=10)
    env.run_due()  # crashed: the branch log is pending, no child yet
    log, now = branch_log(), env.now
    Workflow.objects.bulk_create(
        [
            Workflow(
                job_class="tests.workflows_branches.Leaf",
                key=f"p$grp$items_{i}",
                kwargs={"item": i},
                state="idle",
                parent_execution_log=log,
                created=now,
                modified=now,
            )
            for i in range(10)
        ]
    )
    env.run_all()
    assert_fan_out_converged()
    assert not Workflow.objects.filter(state="idle").exists()


# -- a pre-completed child is re-yielded -----------------------------------------------------------
def test_a_completed_child_re_yielded_by_the_stream_is_left_alone(chrono_forge_env, monkeypatch):
    env = chrono_forge_env
    one_shot(monkeypatch, dispatch, "enqueue_many")
    wb.FanOut.perform_later("p", source="list", n=25, of=10)
    env.run_due()
    log, now = branch_log(), env.now
    done = Workflow.objects.create(
        job_class="tests.workflows_branches.Leaf",
        key="p$grp$items_3",
        kwargs={"item": 3},
        state="completed",
        started_at=now,
        completed_at=now,
        parent_execution_log=log,
        created=now,
        modified=now,
    )
    env.run_all()
    assert Workflow.objects.filter(key="p$grp$items_3").count() == 1
    done.refresh_from_db()
    assert done.state == "completed" and done.completed_at == now  # not re-run
    assert "p$grp$items_3" not in wb.RUNS
    assert Workflow.objects.filter(key__startswith="p$grp$").count() == 25
    assert len(wb.RUNS) == 24 and set(wb.RUNS.values()) == {1}
    assert Workflow.objects.get(key="p").state == "completed"


# -- lost enqueue (a non-transactional broker lost the batch after commit): the poller rekicks -----
def test_a_batch_whose_enqueue_was_lost_is_rekicked_by_the_poller(chrono_forge_env, monkeypatch):
    env = chrono_forge_env
    one_shot(monkeypatch, dispatch, "enqueue_many", drop=True)
    wb.FanOut.perform_later("p", source="list", n=25, of=10)
    start = env.now
    env.run_all()
    assert_fan_out_converged()
    poll = branch_log().metadata["poll"]
    assert poll["rekick_total"] == 10
    assert datetime_of(poll["last_rekick_at"]) >= start + timedelta(minutes=5)


def datetime_of(value):
    from datetime import datetime

    return datetime.fromisoformat(value)


def test_a_pre_inserted_child_gets_started_at_on_its_first_pass(chrono_forge_env):
    from tests.core_sql import capture

    env = chrono_forge_env
    wb.SpawnOne.perform_now("p")  # the parent's pass only
    child = Workflow.objects.get(key="p$grp$child")
    assert child.state == "idle" and child.started_at is None  # the poller's "never started" signal
    env.advance(timedelta(seconds=3))
    with capture() as queries:
        env.run_due()
    child.refresh_from_db()
    assert child.started_at == env.now and child.state == "completed"
    table = Workflow._meta.db_table
    stamps = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(f'UPDATE "{table}"') and '"started_at"' in q["sql"]
    ]
    assert len(stamps) == 1 and '"locked_by"' in stamps[0]  # folded into the lock acquire
