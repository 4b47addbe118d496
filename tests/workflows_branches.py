"""Workflow classes of the fan-out tests (module level, so their job_class imports)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import Group

from chrono_forge import DurableWorkflow, RetryPolicy
from tests.factories import counter, per_test

#: Every child pass that ran its body: key -> count (empty at the start of every test).
RUNS: dict[str, int] = per_test({})
#: Named events (dispatch called, finalize ran, ...): name -> count.
EVENTS = counter()
event = EVENTS.hit


def seed_groups(n: int, prefix: str = "item") -> list[int]:
    """``n`` rows to fan out over (auth's Group: a real table every test database has)."""
    Group.objects.bulk_create([Group(name=f"{prefix}-{i:06d}") for i in range(n)])
    return list(
        Group.objects.filter(name__startswith=f"{prefix}-")
        .order_by("pk")
        .values_list("pk", flat=True)
    )


# -- children --------------------------------------------------------------------------------------
class Leaf(DurableWorkflow):
    """A trivial child: one durable step."""

    def perform(self, **kwargs):
        self.durably_execute(self.work)

    def work(self):
        RUNS[self.key] = RUNS.get(self.key, 0) + 1
        return self.workflow.kwargs


class OtherLeaf(Leaf):
    pass


class Failing(DurableWorkflow):
    """Fails permanently (workflow retry budget 1)."""

    retry_policy = RetryPolicy(max_attempts=1)

    def perform(self, **kwargs):
        event("Failing.perform")
        raise RuntimeError("child failed")


class Mid(DurableWorkflow):
    """A child that fans out itself (nested fan-out)."""

    def perform(self):
        self.branch("sub", self.dispatch, automerge=True)
        event("Mid.done")

    def dispatch(self):
        self.spawn("gc", Leaf)


# -- parents ---------------------------------------------------------------------------------------
class SpawnOne(DurableWorkflow):
    """branch grp (automerge) -> spawn child NoopChild foo=bar -> durably_execute after."""

    def perform(self, *, automerge=True):
        event("SpawnOne.perform")
        self.branch("grp", self.dispatch, automerge=automerge)
        self.durably_execute(self.after)

    def dispatch(self):
        event("SpawnOne.dispatch")
        self.spawn("child", Leaf, foo="bar")

    def after(self):
        event("SpawnOne.after")


class Unmerged(DurableWorkflow):
    def perform(self):
        self.branch("grp", self.dispatch)

    def dispatch(self):
        self.spawn("child", Leaf)


class SpawnOutside(DurableWorkflow):
    def perform(self):
        self.spawn("child", Leaf)


class SpawnEachOutside(DurableWorkflow):
    def perform(self):
        self.spawn_each("items", [1], lambda item: Leaf)


class Nested(DurableWorkflow):
    def perform(self):
        self.branch("outer", self.dispatch_outer, automerge=True)

    def dispatch_outer(self):
        self.branch("inner", self.dispatch_inner)

    def dispatch_inner(self):
        event("Nested.inner")


class BadNames(DurableWorkflow):
    """``which`` picks the bad call: a branch name or a spawn name containing ``$``."""

    def perform(self, *, which):
        if which == "branch":
            self.branch("a$b", self.dispatch, automerge=True)
        else:
            self.branch("grp", self.dispatch_bad_spawn, automerge=True)

    def dispatch(self):
        self.spawn("child", Leaf)

    def dispatch_bad_spawn(self):
        self.spawn("c$d", Leaf)


class TwoBranches(DurableWorkflow):
    def perform(self, *, singular=False):
        self.branch("a", self.dispatch_a)
        self.branch("b", self.dispatch_b)
        merge = self.merge_branch if singular else self.merge_branches
        merge("b", "a")
        self.durably_execute(self.finalize)

    def dispatch_a(self):
        self.spawn("x", Leaf)

    def dispatch_b(self):
        self.spawn("y", Leaf)
        self.spawn("z", OtherLeaf)

    def finalize(self):
        event("TwoBranches.finalize")


class MergeCall(DurableWorkflow):
    """Opens branch ``a`` then calls merge_branches with the given names/options."""

    def perform(self, *, names, merge_options=None):
        self.branch("a", self.dispatch)
        self.merge_branches(*names, **{k: v for k, v in (merge_options or {}).items()})
        self.durably_execute(self.finalize)

    def dispatch(self):
        self.spawn("x", Leaf)

    def finalize(self):
        event("MergeCall.finalize")


class WithFailingChild(DurableWorkflow):
    def perform(self):
        self.branch("grp", self.dispatch, automerge=True)
        self.durably_execute(self.finalize)

    def dispatch(self):
        self.spawn("ok", Leaf)
        self.spawn("bad", Failing)

    def finalize(self):
        event("WithFailingChild.finalize")


class EmptyBranch(DurableWorkflow):
    def perform(self):
        self.branch("grp", self.dispatch, automerge=True)
        self.durably_execute(self.after)

    def dispatch(self):
        event("EmptyBranch.dispatch")

    def after(self):
        event("EmptyBranch.after")


class Top(DurableWorkflow):
    def perform(self):
        self.branch("top", self.dispatch, automerge=True)
        event("Top.done")

    def dispatch(self):
        self.spawn("c", Mid)


class FanOut(DurableWorkflow):
    """spawn_each over ``source``: "groups" (Group rows named ``<prefix>-*``), "list" (range(n)),
    "ordered" (an ordered QuerySet: refused), "values" (a values() QuerySet: refused)."""

    def perform(
        self,
        *,
        source="list",
        n=0,
        of=1000,
        prefix="item",
        automerge=True,
        mixed=False,
        child="Leaf",
    ):
        event("FanOut.perform")
        self.branch("grp", self.dispatch, automerge=automerge)
        self.durably_execute(self.finalize)

    def dispatch(self):
        kwargs = self.workflow.kwargs
        source = kwargs.get("source", "list")
        prefix = kwargs.get("prefix", "item")
        child = {"Leaf": Leaf, "Failing": Failing}[kwargs.get("child", "Leaf")]
        if source == "groups":
            items = Group.objects.filter(name__startswith=f"{prefix}-")
        elif source == "ordered":
            items = Group.objects.filter(name__startswith=f"{prefix}-").order_by("-name")
        elif source == "values":
            items = Group.objects.values("pk")
        else:
            items = range(kwargs.get("n", 0))
        self.spawn_each(
            "items", items, lambda item: self.build(item, child), of=kwargs.get("of", 1000)
        )

    def build(self, item, child):
        value = item.pk if isinstance(item, Group) else item
        if self.workflow.kwargs.get("mixed") and value % 2:
            return OtherLeaf, {"item": value}
        return child, {"item": value}

    def finalize(self):
        event("FanOut.finalize")
        return True


class ListNamed(DurableWorkflow):
    """spawn_each("n", [10, 20, 30], ...) in branch g."""

    def perform(self):
        self.branch("g", self.dispatch, automerge=True)

    def dispatch(self):
        self.spawn_each("n", [10, 20, 30], lambda value: (Leaf, {"value": value}))


class BadSpawnArgs(DurableWorkflow):
    """``case`` picks the invalid spawn: reserved kwarg, non-JSON kwarg, not a workflow class,
    a build returning garbage, a duplicate spawn name, a bad batch size."""

    def perform(self, *, case):
        self.branch("grp", self.dispatch, automerge=True)

    def dispatch(self):
        case = self.workflow.kwargs["case"]
        if case == "reserved":
            self.spawn("child", Leaf, attempt=3)
        elif case == "reserved_each":
            self.spawn_each("items", [1, 2], lambda item: (Leaf, {"retry_counts": {}}))
        elif case == "not_json":
            self.spawn("child", Leaf, when=timedelta(seconds=1))
        elif case == "not_workflow":
            self.spawn("child", dict)
        elif case == "bad_build":
            self.spawn_each("items", [1], lambda item: "Leaf")
        elif case == "duplicate":
            self.spawn("child", Leaf)
            self.spawn("child", Leaf)
        elif case == "bad_of":
            self.spawn_each("items", [1], lambda item: Leaf, of=0)
        elif case == "long_key":
            self.spawn("x" * 300, Leaf)


class WithAfterStep(DurableWorkflow):
    """automerge, then a step: the step's log id must be greater than the merge log id."""

    def perform(self):
        self.branch("grp", self.dispatch, automerge=True)
        self.durably_execute(self.after)

    def dispatch(self):
        self.spawn("child", Leaf)

    def after(self):
        return "after"
