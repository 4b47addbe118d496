"""cleanup and retention (chrono_forge.cleanup.run, the maintenance task)."""

from __future__ import annotations

import math
import tracemalloc
from datetime import datetime, timedelta

import pytest
from django.db import connection

from chrono_forge import cleanup, maintenance, step_names
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests.core_sql import capture

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
JOB = "tests.workflows_ops.OneStep"


def make_workflow(env, key, state, *, terminal_days_ago=None, created_days_ago=0, logs=1, errors=1):
    """A workflow whose terminal transition was ``terminal_days_ago`` days ago, with some logs."""
    now = env.now
    created = now - created_days_ago * DAY
    terminal = now - terminal_days_ago * DAY if terminal_days_ago is not None else created
    wf = Workflow.objects.create(
        job_class=JOB,
        key=key,
        state=state,
        created=created,
        modified=terminal,
        completed_at=terminal if state == "completed" else None,
    )
    for i in range(logs):
        ExecutionLog.objects.create(
            workflow=wf,
            step_name=f"durably_execute$s{i}",
            state="completed",
            created=created,
            modified=created,
        )
    for _ in range(errors):
        ErrorLog.objects.create(workflow=wf, error_class="E", created=created, modified=created)
    return wf


def keys():
    return set(Workflow.objects.values_list("key", flat=True))


# -- terminal workflows ----------------------------------------------------------------------------
def test_old_completed_and_failed_are_deleted_with_their_logs(chrono_forge_env):
    make_workflow(chrono_forge_env, "done", "completed", terminal_days_ago=40, logs=2, errors=1)
    make_workflow(chrono_forge_env, "broken", "failed", terminal_days_ago=40, logs=1, errors=3)
    make_workflow(chrono_forge_env, "fresh", "completed", terminal_days_ago=5)

    result = cleanup.run(older_than=30 * DAY)

    assert result == {
        "workflows": 2,
        "execution_logs": 3,
        "error_logs": 4,
        "repetition_logs": 0,
        "messages": 0,
    }
    assert keys() == {"fresh"}
    assert ExecutionLog.objects.count() == 1 and ErrorLog.objects.count() == 1


def test_terminal_for_only_5_days_is_kept(chrono_forge_env):
    make_workflow(chrono_forge_env, "c", "completed", terminal_days_ago=5)
    make_workflow(chrono_forge_env, "f", "failed", terminal_days_ago=5)
    assert cleanup.run(older_than=30 * DAY)["workflows"] == 0
    assert keys() == {"c", "f"}


def test_retention_counts_from_the_terminal_transition_not_creation(chrono_forge_env):
    make_workflow(chrono_forge_env, "c", "completed", created_days_ago=365, terminal_days_ago=1)
    make_workflow(chrono_forge_env, "f", "failed", created_days_ago=365, terminal_days_ago=1)
    assert cleanup.run(older_than=30 * DAY)["workflows"] == 0
    assert keys() == {"c", "f"}


@pytest.mark.parametrize("state", ["running", "idle", "stalled"])
def test_running_idle_and_stalled_are_never_deleted(chrono_forge_env, state):
    wf = make_workflow(chrono_forge_env, "k", state, created_days_ago=90, terminal_days_ago=90)
    # Even a completed_at left over (e.g. an old value) must not make a live row deletable.
    Workflow.objects.filter(pk=wf.pk).update(completed_at=chrono_forge_env.now - 90 * DAY)
    assert cleanup.run(older_than=DAY) == dict.fromkeys(cleanup.COUNT_KEYS, 0)
    assert keys() == {"k"}


def test_completed_older_than_overrides_for_completed_only(chrono_forge_env):
    make_workflow(chrono_forge_env, "c", "completed", terminal_days_ago=20)
    make_workflow(chrono_forge_env, "f", "failed", terminal_days_ago=20)
    assert cleanup.run(older_than=365 * DAY, completed_older_than=10 * DAY)["workflows"] == 1
    assert keys() == {"f"}


def test_failed_older_than_overrides_for_failed_only(chrono_forge_env):
    make_workflow(chrono_forge_env, "c", "completed", terminal_days_ago=20)
    make_workflow(chrono_forge_env, "f", "failed", terminal_days_ago=20)
    assert cleanup.run(older_than=365 * DAY, failed_older_than=10 * DAY)["workflows"] == 1
    assert keys() == {"c"}


def test_batches_delete_every_row_exactly_once(chrono_forge_env):
    for i in range(7):
        make_workflow(
            chrono_forge_env, f"old{i}", "completed", terminal_days_ago=40, logs=3, errors=2
        )
    make_workflow(chrono_forge_env, "new", "completed", terminal_days_ago=1)
    result = cleanup.run(older_than=30 * DAY, batch_size=2)
    assert result == {
        "workflows": 7,
        "execution_logs": 21,
        "error_logs": 14,
        "repetition_logs": 0,
        "messages": 0,
    }
    assert keys() == {"new"}


def test_dry_run_counts_exactly_and_deletes_nothing(chrono_forge_env):
    for i in range(3):
        make_workflow(chrono_forge_env, f"old{i}", "failed", terminal_days_ago=40, logs=2, errors=1)
    before = (Workflow.objects.count(), ExecutionLog.objects.count(), ErrorLog.objects.count())
    result = cleanup.run(older_than=30 * DAY, batch_size=2, dry_run=True)
    assert result == {
        "workflows": 3,
        "execution_logs": 6,
        "error_logs": 3,
        "repetition_logs": 0,
        "messages": 0,
    }
    assert (
        Workflow.objects.count(),
        ExecutionLog.objects.count(),
        ErrorLog.objects.count(),
    ) == before
    assert cleanup.run(older_than=30 * DAY) == result  # the dry run predicted the real one


def test_progress_reports_each_batch(chrono_forge_env):
    for i in range(5):
        make_workflow(chrono_forge_env, f"old{i}", "completed", terminal_days_ago=40)
    seen = []
    cleanup.run(older_than=30 * DAY, batch_size=2, progress=lambda *a: seen.append(a))
    assert seen == [("workflows", 2, 5), ("workflows", 4, 5), ("workflows", 5, 5)]


@pytest.mark.parametrize(
    "bad",
    [
        {"older_than": "30d"},
        {"older_than": -DAY},
        {"batch_size": 0},
        {"failed_older_than": object()},
        {"batch_size": True},
    ],
)
def test_bad_arguments_raise_before_anything_is_deleted(chrono_forge_env, bad):
    make_workflow(chrono_forge_env, "old", "completed", terminal_days_ago=400)
    with pytest.raises((TypeError, ValueError)):
        cleanup.run(**bad)
    assert keys() == {"old"}


def test_deleting_a_parents_branch_log_nulls_the_childs_link(chrono_forge_env):
    parent = make_workflow(chrono_forge_env, "parent", "completed", terminal_days_ago=40, logs=0)
    branch_log = ExecutionLog.objects.create(
        workflow=parent, step_name="branch$fan", state="completed"
    )
    child = make_workflow(chrono_forge_env, "child", "failed", terminal_days_ago=2)
    Workflow.objects.filter(pk=child.pk).update(parent_execution_log=branch_log)
    child_modified = Workflow.objects.get(pk=child.pk).modified

    assert cleanup.run(older_than=30 * DAY)["workflows"] == 1

    child = Workflow.objects.get(pk=child.pk)
    assert child.parent_execution_log_id is None
    assert child.modified == child_modified  # its failure time (the retention clock) is unchanged


@pytest.mark.parametrize(
    "parent_state,deleted",
    [("idle", False), ("running", False), ("stalled", False), ("completed", True)],
)
def test_children_of_an_in_flight_parent_are_kept(chrono_forge_env, parent_state, deleted):
    parent = make_workflow(chrono_forge_env, "parent", parent_state, terminal_days_ago=1, logs=0)
    branch_log = ExecutionLog.objects.create(
        workflow=parent, step_name="branch$fan", state="pending"
    )
    child = make_workflow(chrono_forge_env, "child", "completed", terminal_days_ago=100)
    Workflow.objects.filter(pk=child.pk).update(parent_execution_log=branch_log)
    orphan = make_workflow(chrono_forge_env, "orphan", "completed", terminal_days_ago=100)
    assert cleanup.run(older_than=30 * DAY)["workflows"] == (2 if deleted else 1)
    assert not Workflow.objects.filter(pk=orphan.pk).exists()
    assert Workflow.objects.filter(pk=child.pk).exists() is not deleted


def test_deletes_are_raw_bulk_statements_not_per_row(chrono_forge_env):
    for i in range(20):
        make_workflow(
            chrono_forge_env, f"old{i}", "completed", terminal_days_ago=40, logs=5, errors=5
        )
    with capture() as queries:
        result = cleanup.run(older_than=30 * DAY, batch_size=1000)
    assert result["execution_logs"] == 100
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 4  # one per table: messages, error logs, execution logs, workflows


# -- repetition logs -------------------------------------------------------------------------------
def repeat_setup(env, name="tick", frontier_days_ago=30, state="running"):
    wf = Workflow.objects.create(job_class=JOB, key=f"repeat-{name}", state=state)
    metadata = {"method": name}
    if frontier_days_ago is not None:
        metadata["last_execution_at"] = (env.now - frontier_days_ago * DAY).isoformat()
    coordination = ExecutionLog.objects.create(
        workflow=wf, step_name=f"durably_repeat${name}", state="pending", metadata=metadata
    )
    return wf, coordination


def repetition(wf, name, when: datetime, state="completed", created=None):
    return ExecutionLog.objects.create(
        workflow=wf,
        step_name=f"durably_repeat${name}${int(when.timestamp())}",
        state=state,
        created=created or when,
        modified=created or when,
    )


def test_repetition_pruning_is_off_without_a_window(chrono_forge_env):
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=1)
    old = repetition(wf, "tick", chrono_forge_env.now - 730 * DAY)
    assert cleanup.run()["repetition_logs"] == 0
    assert ExecutionLog.objects.filter(pk=old.pk).exists()


def test_frontier_rule(chrono_forge_env):
    now = chrono_forge_env.now
    wf, coordination = repeat_setup(chrono_forge_env, frontier_days_ago=30)
    behind = repetition(wf, "tick", now - 31 * DAY)
    at_frontier = repetition(wf, "tick", now - 30 * DAY)
    ahead = repetition(wf, "tick", now - 29 * DAY)
    pending = repetition(wf, "tick", now - 32 * DAY, state="pending")

    result = cleanup.run(prune_repetitions_older_than=7 * DAY)

    assert result == {
        "workflows": 0,
        "execution_logs": 0,
        "error_logs": 0,
        "repetition_logs": 1,
        "messages": 0,
    }
    remaining = set(ExecutionLog.objects.values_list("pk", flat=True))
    assert remaining == {coordination.pk, at_frontier.pk, ahead.pk, pending.pk}
    assert behind.pk not in remaining


def test_window_limits_pruning_when_the_frontier_is_recent(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    old = repetition(wf, "tick", now - 10 * DAY)
    recent = repetition(wf, "tick", now - 3 * DAY)
    failed_old = repetition(
        wf, "tick", now - 9 * DAY, state="failed"
    )  # e.g. a fast-forward summary row
    assert cleanup.run(prune_repetitions_older_than=7 * DAY)["repetition_logs"] == 2
    assert set(
        ExecutionLog.objects.filter(step_name__contains="$tick$").values_list("pk", flat=True)
    ) == {recent.pk}
    assert not ExecutionLog.objects.filter(pk__in=[old.pk, failed_old.pk]).exists()


def test_no_frontier_prunes_nothing(chrono_forge_env):
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=None)
    repetition(wf, "tick", chrono_forge_env.now - 400 * DAY)
    assert cleanup.run(prune_repetitions_older_than=DAY)["repetition_logs"] == 0
    assert ExecutionLog.objects.count() == 2


def test_uses_the_timestamp_in_the_step_name_not_created(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    catch_up = repetition(
        wf, "tick", now - 365 * DAY, created=now
    )  # scheduled a year ago, written today
    assert cleanup.run(prune_repetitions_older_than=7 * DAY)["repetition_logs"] == 1
    assert not ExecutionLog.objects.filter(pk=catch_up.pk).exists()


def test_batches_prune_every_row_once_and_keep_pending(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    for i in range(7):
        repetition(wf, "tick", now - (10 + i) * DAY)
    pending = repetition(wf, "tick", now - 20 * DAY, state="pending")
    assert cleanup.run(prune_repetitions_older_than=DAY, batch_size=2)["repetition_logs"] == 7
    assert list(
        ExecutionLog.objects.filter(step_name__contains="$tick$").values_list("pk", flat=True)
    ) == [pending.pk]


def test_scheduled_within_the_window_but_created_long_ago_is_kept(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    kept = repetition(wf, "tick", now - 2 * DAY, created=now - 60 * DAY)
    assert cleanup.run(prune_repetitions_older_than=7 * DAY)["repetition_logs"] == 0
    assert ExecutionLog.objects.filter(pk=kept.pk).exists()


def test_prefix_match_treats_underscore_and_percent_literally(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, name="a_b", frontier_days_ago=0)
    # Same workflow, a sibling repeat whose name matches "a_b" only if "_" were a wildcard; it has
    # no frontier, so none of its rows may go.
    ExecutionLog.objects.create(
        workflow=wf, step_name="durably_repeat$axb", state="pending", metadata={}
    )
    sibling = repetition(wf, "axb", now - 50 * DAY)
    longer = repetition(wf, "a_bc", now - 50 * DAY)  # shares the prefix text, not the "$" boundary
    own = repetition(wf, "a_b", now - 50 * DAY)
    wf2, _ = repeat_setup(chrono_forge_env, name="p%", frontier_days_ago=None)
    percent_sibling = repetition(wf2, "pq", now - 50 * DAY)

    assert cleanup.run(prune_repetitions_older_than=DAY)["repetition_logs"] == 1

    assert not ExecutionLog.objects.filter(pk=own.pk).exists()
    assert (
        ExecutionLog.objects.filter(pk__in=[sibling.pk, longer.pk, percent_sibling.pk]).count() == 3
    )


def test_pruning_a_live_repeat_never_re_executes_a_tick(chrono_forge_env):
    """Prune all that is prunable (window 0) mid-repeat: no tick runs twice or goes missing."""
    from tests import workflows_ops as w

    w.TICKS.clear()
    env = chrono_forge_env
    start = env.now
    wf = w.Ticker.perform_later("ticker", limit=6)
    env.run_due()
    env.advance(timedelta(seconds=1))
    env.run_due()
    env.advance(timedelta(seconds=1))
    env.run_due()
    prefix = list(w.TICKS)
    assert len(prefix) == 3

    result = cleanup.run(prune_repetitions_older_than=timedelta(0))

    assert result["repetition_logs"] == 2  # the ticks behind the frontier (the third handled)
    assert ExecutionLog.objects.filter(workflow=wf, step_name="durably_repeat$tick").exists()
    env.run_all()
    assert w.TICKS[:3] == prefix
    assert w.TICKS == [start + timedelta(seconds=n) for n in range(6)]
    assert Workflow.objects.get(pk=wf.pk).state == "completed"


FRONTIER_FORMS = [
    # What the engine writes (datetime.isoformat() of an aware time), and what Python's
    # fromisoformat also reads: "Z", a space, a fraction (never rounded up: SQLite keeps
    # milliseconds), another offset, a leap day.
    "2026-03-10T12:00:07+00:00",
    "2026-03-10T12:00:07.999999+00:00",
    "2026-03-10T12:00:07.5Z",
    "2026-03-10 12:00:07+00:00",
    "2026-03-10T07:30:07.999-04:30",
    "2024-02-29T00:00:00+01:00",
    # No frontier: nothing of that task is pruned.
    "2023-02-29T00:00:00+00:00",
    "2026-04-31T00:00:00+00:00",
    "2026-03-10T24:00:00+00:00",
    "not a time",
    "",
    None,
    12345,
]


@pytest.mark.parametrize("value", FRONTIER_FORMS)
def test_the_database_reads_the_frontier_as_python_does(chrono_forge_env, value):
    """The pruning statement converts the frontier in the database; it agrees with
    :func:`cleanup.frontier` second for second, and prunes nothing where that finds no time."""
    wf = Workflow.objects.create(job_class=JOB, key="frontier")
    coordination = ExecutionLog.objects.create(
        workflow=wf,
        step_name="durably_repeat$tick",
        state="pending",
        metadata={"last_execution_at": value},
    )
    last = cleanup.frontier(coordination)
    around = 1773144007 if last is None else math.floor(last.timestamp())
    ticks = [around + delta for delta in (-3601, -2, -1, 0, 1, 2)]
    for tick in ticks:
        ExecutionLog.objects.create(
            workflow=wf, step_name=step_names.repetition_name("tick", tick), state="completed"
        )
    result = cleanup.run(prune_repetitions_older_than=timedelta(0))
    expected = [] if last is None else [t for t in ticks if t < math.floor(last.timestamp())]
    assert result["repetition_logs"] == len(expected)
    kept = {
        step_names.tick_seconds(name, "durably_repeat$tick$")
        for name in ExecutionLog.objects.filter(workflow=wf).values_list("step_name", flat=True)
    }
    assert kept == {None, *(set(ticks) - set(expected))}


def test_only_whole_second_suffixes_are_ticks_in_the_database_too(chrono_forge_env):
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    old = int((chrono_forge_env.now - 10 * DAY).timestamp())
    names = {
        f"durably_repeat$tick${old}": True,
        f"durably_repeat$tick$0{old}": True,  # int("0...") reads it too
        f"durably_repeat$tick${old}x": False,
        f"durably_repeat$tick${old}.5": False,
        "durably_repeat$tick$": False,
        "durably_repeat$tick$\u0661\u0662": False,  # digits, not ASCII ones
        f"durably_repeat$tick$-{old}": False,
        f"durably_repeat$tick$${old}": False,
        f"durably_repeat$tickx${old}": False,  # another task's name
    }
    for name in names:
        ExecutionLog.objects.create(workflow=wf, step_name=name, state="completed")
    assert cleanup.run(prune_repetitions_older_than=DAY)["repetition_logs"] == 2
    left = set(ExecutionLog.objects.filter(workflow=wf).values_list("step_name", flat=True))
    assert left == {"durably_repeat$tick"} | {name for name, goes in names.items() if not goes}


def test_tick_seconds_parses_only_whole_second_suffixes():
    assert step_names.tick_seconds("durably_repeat$a$1700000000", "durably_repeat$a$") == 1700000000
    assert step_names.tick_seconds("durably_repeat$ab$1700000000", "durably_repeat$a$") is None
    assert step_names.tick_seconds("durably_repeat$a$17x", "durably_repeat$a$") is None
    assert step_names.tick_seconds("durably_repeat$a$", "durably_repeat$a$") is None


def test_pruning_a_repetition_log_nulls_links_pointing_to_it(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    rep = repetition(wf, "tick", now - 10 * DAY)
    other = Workflow.objects.create(job_class=JOB, key="linked", parent_execution_log=rep)
    assert cleanup.run(prune_repetitions_older_than=DAY)["repetition_logs"] == 1
    assert Workflow.objects.get(pk=other.pk).parent_execution_log_id is None


def test_pruning_unlinks_only_links_to_the_pruned_ids_within_their_range(chrono_forge_env):
    """The links are read for the chunk's id range: a link to another log inside that range
    (here a branch log created between two pruned ticks) is kept."""
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    first = repetition(wf, "tick", now - 12 * DAY)
    parent = Workflow.objects.create(job_class=JOB, key="parent", state="idle")
    branch_log = ExecutionLog.objects.create(
        workflow=parent, step_name="branch$fan", state="completed"
    )
    last = repetition(wf, "tick", now - 11 * DAY)
    assert first.pk < branch_log.pk < last.pk
    child = Workflow.objects.create(job_class=JOB, key="child", parent_execution_log=branch_log)
    linked = Workflow.objects.create(job_class=JOB, key="linked", parent_execution_log=last)
    assert cleanup.run(prune_repetitions_older_than=DAY)["repetition_logs"] == 2
    assert Workflow.objects.get(pk=child.pk).parent_execution_log_id == branch_log.pk
    assert Workflow.objects.get(pk=linked.pk).parent_execution_log_id is None


def test_pruning_dry_run(chrono_forge_env):
    now = chrono_forge_env.now
    wf, _ = repeat_setup(chrono_forge_env, frontier_days_ago=0)
    for i in range(3):
        repetition(wf, "tick", now - (10 + i) * DAY)
    assert cleanup.run(prune_repetitions_older_than=DAY, dry_run=True)["repetition_logs"] == 3
    assert ExecutionLog.objects.count() == 4


# -- the maintenance task --------------------------------------------------------------------------
def test_maintenance_cleanup_takes_plain_day_counts(chrono_forge_env):
    make_workflow(chrono_forge_env, "c40", "completed", terminal_days_ago=40)
    make_workflow(chrono_forge_env, "f20", "failed", terminal_days_ago=20)
    make_workflow(chrono_forge_env, "c20", "completed", terminal_days_ago=20)
    result = maintenance.cleanup(older_than_days=30, failed_older_than_days=10, batch_size=1)
    assert result["workflows"] == 2
    assert keys() == {"c20"}


def test_maintenance_cleanup_runs_with_no_args(chrono_forge_env):
    make_workflow(chrono_forge_env, "c100", "completed", terminal_days_ago=100)
    make_workflow(chrono_forge_env, "c80", "completed", terminal_days_ago=80)
    assert maintenance.cleanup()["workflows"] == 1  # 90 days by default
    assert keys() == {"c80"}


def test_enqueued_cleanup_uses_the_maintenance_cluster_at_enqueue_time(chrono_forge_env, settings):
    settings.CHRONO_FORGE = {"MAINTENANCE_CLUSTER": "housekeeping"}
    maintenance.enqueue("cleanup")
    settings.CHRONO_FORGE = {"MAINTENANCE_CLUSTER": "other"}
    [run] = chrono_forge_env.pending
    assert (run.func, run.cluster, run.args, run.kwargs) == (
        "chrono_forge.maintenance.cleanup",
        "housekeeping",
        (),
        {},
    )
    make_workflow(chrono_forge_env, "c100", "completed", terminal_days_ago=100)
    chrono_forge_env.run_due()
    assert keys() == set()


# -- bounded memory --------------------------------------------------------------------------------
def copy_rows(model, from_workflow_id, to_workflow_ids):
    """Copy one workflow's rows of ``model`` to other workflows, inside the database (fast fill)."""
    columns = [f.column for f in model._meta.concrete_fields if not f.primary_key]
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    select = ", ".join(
        "%s" if c == "workflow_id" else connection.ops.quote_name(c) for c in columns
    )
    with connection.cursor() as cursor:
        for workflow_id in to_workflow_ids:
            cursor.execute(
                f"INSERT INTO {table} ({names}) "
                f"SELECT {select} FROM {table} WHERE workflow_id = %s",
                [workflow_id, from_workflow_id],
            )


def bulk_logs(env, rows: int, per_workflow: int = 1000):
    """``rows`` execution logs (and a tenth as many error logs) under old completed workflows."""
    old = env.now - 400 * DAY
    start = Workflow.objects.count()
    Workflow.objects.bulk_create(
        Workflow(
            job_class=JOB,
            key=f"bulk{start + i}",
            state="completed",
            completed_at=old,
            created=old,
            modified=old,
        )
        for i in range(rows // per_workflow)
    )
    first, *others = (
        Workflow.objects.filter(key__startswith="bulk").order_by("pk").values_list("pk", flat=True)
    )
    ExecutionLog.objects.bulk_create(
        (
            ExecutionLog(
                workflow_id=first,
                step_name=f"durably_execute$s{i}",
                state="completed",
                result={"payload": "x" * 50},
                metadata={},
                created=old,
                modified=old,
            )
            for i in range(per_workflow)
        ),
        batch_size=500,
    )
    ErrorLog.objects.bulk_create(
        (
            ErrorLog(
                workflow_id=first,
                error_class="E",
                backtrace="trace " * 20,
                created=old,
                modified=old,
            )
            for _ in range(per_workflow // 10)
        ),
        batch_size=500,
    )
    copy_rows(ExecutionLog, first, others)
    copy_rows(ErrorLog, first, others)
    assert ExecutionLog.objects.count() == rows


def peak_memory_of_cleanup() -> tuple[int, dict]:
    tracemalloc.start()
    try:
        result = cleanup.run(older_than=30 * DAY, batch_size=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def test_cleanup_of_100k_log_rows_has_bounded_memory(chrono_forge_env, settings):
    settings.DEBUG = False  # no query log growing with the run
    bulk_logs(chrono_forge_env, 10_000)
    small_peak, small = peak_memory_of_cleanup()
    assert small["execution_logs"] == 10_000

    bulk_logs(chrono_forge_env, 100_000)
    large_peak, large = peak_memory_of_cleanup()

    assert large == {
        "workflows": 100,
        "execution_logs": 100_000,
        "error_logs": 10_000,
        "repetition_logs": 0,
        "messages": 0,
    }
    assert ExecutionLog.objects.count() == 0 and Workflow.objects.count() == 0
    # Ten times the rows, (nearly) the same peak: nothing proportional to the row count is held.
    assert large_peak < 2 * small_peak + 256 * 1024, (small_peak, large_peak)
    assert large_peak < 4 * 1024 * 1024, large_peak
