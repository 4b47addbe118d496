"""branch / spawn / spawn_each / merge_branches / automerge, bulk dispatch re-validation and the
completion gate."""

from datetime import timedelta

import pytest
from django.test import override_settings

from chrono_forge.exceptions import (
    InvalidStepArgument,
    InvalidStepName,
    NotExecutableError,
    NotInBranchError,
    UnknownBranchError,
    UnmergedBranchError,
)
from chrono_forge.models import ExecutionLog, Workflow
from tests import workflows_branches as wb
from tests.core_sql import capture

pytestmark = pytest.mark.django_db

LEAF = "tests.workflows_branches.Leaf"


def log_of(key, step):
    return ExecutionLog.objects.get(workflow__key=key, step_name=step)


def children_of(key):
    return Workflow.objects.filter(key__startswith=f"{key}$").order_by("key")


def inserts_into_workflows(queries):
    table = Workflow._meta.db_table
    return sum(1 for q in queries if q["sql"].startswith(f'INSERT INTO "{table}"'))


def parent_passes_pending(env, key):
    return [run for run in env.pending if run.is_workflow_pass and run.key == key]


def test_spawn_creates_a_linked_child_and_seals_the_branch(chrono_forge_env):
    wb.SpawnOne.perform_later("p")
    chrono_forge_env.run_all()

    branch = log_of("p", "branch$grp")
    assert branch.state == "completed"
    assert branch.metadata["sealed"] is True and branch.metadata["automerge"] is True
    child = Workflow.objects.get(key="p$grp$child")
    assert child.job_class == LEAF
    assert child.parent_execution_log_id == branch.pk
    assert child.kwargs == {"foo": "bar"}
    # the relation works both ways
    assert child.parent_execution_log == branch
    assert list(branch.child_workflows.all()) == [child]


def test_automerge_completes_the_merge_and_the_parent_after_the_child(chrono_forge_env):
    wb.SpawnOne.perform_later("p")
    chrono_forge_env.run_all()

    parent, child = Workflow.objects.get(key="p"), Workflow.objects.get(key="p$grp$child")
    assert parent.state == child.state == "completed"
    assert parent.completed_at >= child.completed_at
    merge = log_of("p", "merge$grp")
    after = log_of("p", "durably_execute$after")
    assert merge.state == after.state == "completed"
    assert after.pk > merge.pk  # automerge blocks the later steps
    assert wb.EVENTS["SpawnOne.after"] == 1


def test_the_parent_is_not_replayed_while_it_waits(chrono_forge_env):
    env = chrono_forge_env
    wb.SpawnOne.perform_later("p")
    env.run_due()  # the parent's pass, then the child's (both due now)
    assert wb.EVENTS["SpawnOne.perform"] == 1
    parent = Workflow.objects.get(key="p")
    assert parent.state == "idle" and parent.locked_by is None
    assert parent_passes_pending(env, "p") == []  # parked: nothing enqueued for the parent
    [poller] = env.pending
    assert poller.func == "chrono_forge.tasks.poll_merge"
    assert poller.run_at == env.now + timedelta(seconds=5)
    assert parent.next_run_at == poller.run_at  # due with its poll: a lost poller is overdue
    env.run_all()
    assert wb.EVENTS["SpawnOne.perform"] == 2  # exactly one wake-up
    assert Workflow.objects.get(key="p").state == "completed"


@pytest.mark.parametrize("cls", [wb.SpawnOutside, wb.SpawnEachOutside])
def test_spawning_outside_a_branch_raises_and_stalls(chrono_forge_env, cls):
    cls.perform_later("p")
    with pytest.raises(NotInBranchError, match="inside a branch"):
        chrono_forge_env.run_all()
    assert Workflow.objects.get(key="p").state == "stalled"
    assert chrono_forge_env.pending == []  # not retried
    assert not children_of("p").exists()


def test_replay_of_a_sealed_branch_skips_dispatch_and_inserts_nothing(chrono_forge_env):
    env = chrono_forge_env
    wb.SpawnOne.perform_later("p")
    env.run_all()
    ExecutionLog.objects.filter(workflow__key="p", step_name="$workflow_completion$").delete()
    Workflow.objects.filter(key="p").update(state="idle", completed_at=None)
    Workflow.objects.get(key="p").resume()
    with capture() as queries:
        env.run_all()
    assert inserts_into_workflows(queries.captured_queries) == 0
    assert children_of("p").count() == 1
    assert wb.EVENTS["SpawnOne.dispatch"] == 1
    assert Workflow.objects.get(key="p").state == "completed"


def test_a_lexically_nested_branch_is_refused_before_its_body_runs(chrono_forge_env):
    wb.Nested.perform_later("p")
    with pytest.raises(InvalidStepArgument, match="nested"):
        chrono_forge_env.run_all()
    assert "Nested.inner" not in wb.EVENTS
    assert not ExecutionLog.objects.filter(step_name="branch$inner").exists()
    assert Workflow.objects.get(key="p").state == "stalled"


@pytest.mark.parametrize("which, bad", [("branch", "a$b"), ("spawn", "c$d")])
def test_dollar_in_a_branch_or_spawn_name_is_refused(chrono_forge_env, which, bad):
    wb.BadNames.perform_later("p", which=which)
    with pytest.raises(InvalidStepName, match=r"\$"):
        chrono_forge_env.run_all()
    assert not children_of("p").exists()


# -- the completion gate ---------------------------------------------------------------------------
def test_a_branch_never_merged_fails_the_completion_gate(chrono_forge_env):
    wb.Unmerged.perform_later("p")
    with pytest.raises(UnmergedBranchError) as caught:
        chrono_forge_env.run_all()
    message = str(caught.value)
    assert "'grp'" in message and "never merged" in message and "automerge=True" in message
    parent = Workflow.objects.get(key="p")
    assert parent.state == "stalled"
    assert not parent.execution_logs.filter(step_name="$workflow_completion$").exists()


def test_the_gate_costs_no_query_for_a_workflow_that_did_not_branch(chrono_forge_env):
    from chrono_forge.executor import Delivery

    wf = wb.Leaf.perform_later("solo")
    run = Delivery(wb.Leaf, "solo").acquire()
    assert run is not None
    instance = wb.Leaf._bind(run.row, run)
    with capture() as queries:
        instance._before_completion()
    assert queries.captured_queries == []
    run.release(wf.STATE.idle)


def test_the_gate_costs_no_query_after_a_merge(chrono_forge_env):
    from chrono_forge.executor import Delivery

    wb.SpawnOne.perform_later("p")
    chrono_forge_env.run_all()
    Workflow.objects.filter(key="p").update(state="idle")
    run = Delivery(wb.SpawnOne, "p").acquire()
    assert run is not None
    instance = wb.SpawnOne._bind(run.row, run)
    instance.perform()  # replays: the branch is sealed, the merge completed
    with capture() as queries:
        instance._before_completion()
    assert queries.captured_queries == []
    run.release("completed")


@pytest.mark.parametrize("singular", [False, True])
def test_merge_branches_joins_two_branches(chrono_forge_env, singular):
    wb.TwoBranches.perform_later("p", singular=singular)
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="p").state == "completed"
    assert log_of("p", "merge$a,b").state == "completed"
    assert wb.EVENTS["TwoBranches.finalize"] == 1
    assert sorted(children_of("p").values_list("key", "state")) == [
        ("p$a$x", "completed"),
        ("p$b$y", "completed"),
        ("p$b$z", "completed"),
    ]
    assert Workflow.objects.get(key="p$b$z").job_class == "tests.workflows_branches.OtherLeaf"


def test_the_first_pass_halts_at_the_merge_with_one_token_on_both_branches(chrono_forge_env):
    env = chrono_forge_env
    wb.TwoBranches.perform_later("p")
    env.run_due()
    a, b = log_of("p", "branch$a"), log_of("p", "branch$b")
    merge = log_of("p", "merge$a,b")
    assert merge.state == "pending"
    token = a.metadata["poll_token"]
    assert token and token == b.metadata["poll_token"] == merge.metadata["poll_token"]
    assert merge.metadata["branches"] == ["a", "b"]
    assert merge.metadata["min_interval"] == 5.0 and merge.metadata["max_interval"] == 300.0
    [poller] = env.pending
    # the merge log holds the parent, the branches and the intervals: the task needs only its id
    assert poller.args == (merge.pk, token) and "merge_log_id" not in poller.kwargs


def test_merging_a_branch_never_opened_raises_unknown_branch(chrono_forge_env):
    wb.MergeCall.perform_later("p", names=["a", "nope"])
    with pytest.raises(UnknownBranchError, match="nope"):
        chrono_forge_env.run_all()
    assert not ExecutionLog.objects.filter(step_name__startswith="merge$").exists()


@pytest.mark.parametrize("bad", ["a$b", "a,b"])
def test_merge_names_with_reserved_characters_are_refused(chrono_forge_env, bad):
    wb.MergeCall.perform_later("p", names=[bad])
    with pytest.raises(InvalidStepName):
        chrono_forge_env.run_all()


def test_duplicate_merge_names_are_deduplicated(chrono_forge_env):
    wb.MergeCall.perform_later("p", names=["a", "a"])
    chrono_forge_env.run_all()
    assert Workflow.objects.get(key="p").state == "completed"
    assert list(
        ExecutionLog.objects.filter(step_name__startswith="merge$").values_list(
            "step_name", flat=True
        )
    ) == ["merge$a"]


@pytest.mark.parametrize(
    "options, match",
    [
        ({"min_interval": 10, "max_interval": 5}, "must not exceed"),
        ({"min_interval": 0}, "positive"),
        ({"max_interval": "soon"}, "timedelta"),
    ],
)
def test_bad_merge_intervals_raise_at_the_call_site(chrono_forge_env, options, match):
    wb.MergeCall.perform_later("p", names=["a"], merge_options=options)
    with pytest.raises(ValueError, match=match):
        chrono_forge_env.run_all()
    assert not ExecutionLog.objects.filter(step_name__startswith="merge$").exists()
    assert [run for run in chrono_forge_env.pending if not run.is_workflow_pass] == []


def test_no_merge_names_is_refused(chrono_forge_env):
    wb.MergeCall.perform_later("p", names=[])
    with pytest.raises(InvalidStepArgument, match="at least one"):
        chrono_forge_env.run_all()


def test_merge_intervals_are_stored_and_drive_the_first_poll(chrono_forge_env):
    env = chrono_forge_env
    wb.MergeCall.perform_later(
        "p", names=["a"], merge_options={"min_interval": 2, "max_interval": 60}
    )
    env.run_due()
    merge = log_of("p", "merge$a")
    assert merge.metadata["min_interval"] == 2.0 and merge.metadata["max_interval"] == 60.0
    [poller] = env.pending
    assert poller.run_at == env.now + timedelta(seconds=2)
    assert poller.args == (merge.pk, merge.metadata["poll_token"])


# -- a failed child holds the merge ----------------------------------------------------------------
def test_a_failed_child_holds_the_merge_until_an_operator_recovers_it(chrono_forge_env):
    env = chrono_forge_env
    wb.WithFailingChild.perform_later("p")
    env.run_due()
    assert Workflow.objects.get(key="p$grp$bad").state == "failed"
    assert Workflow.objects.get(key="p$grp$ok").state == "completed"
    env.advance(timedelta(seconds=5))
    env.run_due()  # the poller: only a blocked child is left -> back off to max_interval
    parent = Workflow.objects.get(key="p")
    assert parent.state == "idle"
    assert "WithFailingChild.finalize" not in wb.EVENTS
    assert log_of("p", "merge$grp").state == "pending"
    [poller] = env.pending
    assert poller.run_at == env.now + timedelta(seconds=300)
    assert log_of("p", "branch$grp").metadata["poll"]["blocked"] == 1

    # Operator recovery flips the child to completed: the next poll wakes the parent.
    Workflow.objects.filter(key="p$grp$bad").update(state="completed")
    env.run_all()
    assert Workflow.objects.get(key="p").state == "completed"
    assert wb.EVENTS["WithFailingChild.finalize"] == 1


def test_spawn_each_over_an_empty_source_seals_and_completes(chrono_forge_env):
    wb.FanOut.perform_later("p", source="list", n=0)
    chrono_forge_env.run_all()
    assert log_of("p", "branch$grp").state == "completed"
    assert not children_of("p").exists()
    assert Workflow.objects.get(key="p").state == "completed"


def test_an_empty_branch_resolves_in_the_same_pass(chrono_forge_env):
    env = chrono_forge_env
    wb.EmptyBranch.perform_later("p")
    assert env.run_due() == 1  # one pass, no poller ever scheduled
    assert Workflow.objects.get(key="p").state == "completed"
    assert wb.EVENTS == {"EmptyBranch.dispatch": 1, "EmptyBranch.after": 1}
    merge = log_of("p", "merge$grp")
    assert (
        merge.state == "completed" and merge.attempts == 1 and merge.metadata["poll_token"] is None
    )


def test_nested_fan_out_completes_bottom_up(chrono_forge_env):
    wb.Top.perform_later("p")
    chrono_forge_env.run_all()
    top, mid, leaf = (Workflow.objects.get(key=k) for k in ("p", "p$top$c", "p$top$c$sub$gc"))
    assert top.state == mid.state == leaf.state == "completed"
    assert leaf.completed_at <= mid.completed_at <= top.completed_at
    assert leaf.parent_execution_log == log_of("p$top$c", "branch$sub")
    assert wb.RUNS == {"p$top$c$sub$gc": 1}


def test_spawn_each_over_a_queryset_keys_children_by_pk_and_stores_the_cursor(chrono_forge_env):
    pks = wb.seed_groups(5)
    wb.FanOut.perform_later("p", source="groups")
    chrono_forge_env.run_all()
    assert list(children_of("p").values_list("key", flat=True)) == sorted(
        f"p$grp$items_{pk}" for pk in pks
    )
    assert log_of("p", "branch$grp").metadata["cursors"] == {"items": {"pk": pks[-1]}}
    assert sorted(c.kwargs["item"] for c in children_of("p")) == pks
    assert Workflow.objects.get(key="p").state == "completed"


def test_spawn_each_build_may_pick_a_class_per_item(chrono_forge_env):
    wb.FanOut.perform_later("p", source="list", n=4, mixed=True)
    chrono_forge_env.run_all()
    classes = dict(children_of("p").values_list("key", "job_class"))
    assert classes == {
        "p$grp$items_0": LEAF,
        "p$grp$items_1": "tests.workflows_branches.OtherLeaf",
        "p$grp$items_2": LEAF,
        "p$grp$items_3": "tests.workflows_branches.OtherLeaf",
    }
    assert set(children_of("p").values_list("state", flat=True)) == {"completed"}


def test_spawn_each_refuses_an_explicitly_ordered_queryset(chrono_forge_env):
    wb.seed_groups(3)
    wb.FanOut.perform_later("p", source="ordered")
    with pytest.raises(NotExecutableError, match="order_by"):
        chrono_forge_env.run_all()
    assert not children_of("p").exists()


def test_spawn_each_refuses_a_values_queryset(chrono_forge_env):
    wb.seed_groups(3)
    wb.FanOut.perform_later("p", source="values")
    with pytest.raises(InvalidStepArgument, match="model instances"):
        chrono_forge_env.run_all()


def test_a_queryset_with_default_model_ordering_is_accepted(chrono_forge_env):
    # Group has no Meta.ordering; django's Permission does (content_type, codename): the default
    # ordering is replaced by the primary key, only an explicit order_by() is refused.
    from django.contrib.auth.models import Permission

    from chrono_forge.primitives.branch import _queryset_batches

    assert Permission._meta.ordering
    pages = list(_queryset_batches(Permission.objects.all(), 1000, None, "spawn_each 'p'"))
    pks = [pk for _, suffixes, _ in pages for pk in suffixes]
    assert pks == sorted(Permission.objects.values_list("pk", flat=True))


def test_spawn_each_over_a_list_keys_children_by_position(chrono_forge_env):
    wb.ListNamed.perform_later("p")
    chrono_forge_env.run_all()
    assert dict(children_of("p").values_list("key", "kwargs")) == {
        "p$g$n_0": {"value": 10},
        "p$g$n_1": {"value": 20},
        "p$g$n_2": {"value": 30},
    }
    assert log_of("p", "branch$g").metadata["cursors"] == {"n": {"index": 3}}


# -- bulk dispatch re-validates (it bypasses perform_later's guard) --------------------------------
@pytest.mark.parametrize(
    "case, error, match",
    [
        ("reserved", ValueError, "reserved"),
        ("reserved_each", ValueError, "reserved"),
        ("not_json", TypeError, "JSON"),
        ("not_workflow", InvalidStepArgument, "DurableWorkflow subclass"),
        ("bad_build", InvalidStepArgument, r"\(class, kwargs\)"),
        ("duplicate", InvalidStepArgument, "already used"),
        ("bad_of", InvalidStepArgument, "positive int"),
        ("long_key", ValueError, "limit is 255"),
    ],
)
def test_invalid_children_are_refused_before_anything_is_stored(
    chrono_forge_env, case, error, match
):
    wb.BadSpawnArgs.perform_later("p", case=case)
    with pytest.raises(error, match=match) as caught:
        chrono_forge_env.run_all()
    assert isinstance(caught.value, NotExecutableError)  # stalls, never retried
    assert Workflow.objects.get(key="p").state == "stalled"
    if case == "duplicate":  # the first spawn was valid, and is durable
        assert list(children_of("p").values_list("key", flat=True)) == ["p$grp$child"]
    else:
        assert not children_of("p").exists()
        assert [run for run in chrono_forge_env.pending if run.key != "p"] == []


# -- the poller's queue comes from the settings, read at enqueue time ------------------------------
def test_the_poller_goes_to_the_branch_merge_cluster(chrono_forge_env):
    env = chrono_forge_env
    wb.SpawnOne.perform_later("p")
    env.run_due()
    assert [run.cluster for run in env.pending] == [None]
    env.drop_pending()
    with override_settings(CHRONO_FORGE={"BRANCH_MERGE_CLUSTER": "merges"}):
        wb.SpawnOne.perform_later("q")
        env.run_due()
        [poller] = env.pending
    assert poller.func == "chrono_forge.tasks.poll_merge" and poller.cluster == "merges"
