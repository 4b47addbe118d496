"""``branch``, ``spawn`` and ``spawn_each``: fan out child workflows, durably and in bulk.

Step name ``branch$<name>``. The branch log is INSERTed pending, then ``dispatch`` runs and every
``spawn``/``spawn_each`` inside it writes child rows; when ``dispatch`` returns the log is completed
("sealed") and a later pass never calls ``dispatch`` again. ``automerge=True`` merges it at once.

Children are ``Workflow`` rows linked to the branch log (``parent_execution_log``), keyed ``<parent
key>$<branch>$<name>`` (spawn), ``..._<pk>`` (a QuerySet source, streamed by primary key in keyset
batches) or ``..._<index>`` (any other iterable). Each batch is ONE transaction:

    bulk INSERT ... ON CONFLICT DO NOTHING   (rows pre-inserted with started_at NULL, due now)
    SELECT the keys still idle and never started   (already-run children are left alone)
    bulk enqueue those                         (part of the transaction with the ORM broker)
    UPDATE the cursor in the branch log's metadata

so a crash anywhere resumes from the last committed cursor: no gap, no duplicate row, at most one
batch re-offered (insert-ignore deduplicates it). Memory is one batch, whatever the source size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.db.models import Manager, QuerySet
from django.db.models.query import ModelIterable

from .. import clock, dispatch
from ..exceptions import (
    InvalidStepArgument,
    NotExecutableError,
    NotInBranchError,
    UnmergedBranchError,
)
from ..models import Workflow
from ..payloads import json_pk
from ..step_names import merge_branches
from ..steps import COMPLETED, PENDING
from ..validation import (
    check_perform_arguments,
    step_name,
    validate_key,
    validate_kwargs,
    validate_name,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..executor import Pass
    from ..models import ExecutionLog
    from ..workflow import DurableWorkflow

#: psycopg's limit on bind parameters per statement (Django declares none for PostgreSQL).
DEFAULT_MAX_QUERY_PARAMS = 65535

IDLE = Workflow.STATE.idle


@dataclass
class Dispatching:
    """The branch whose ``dispatch`` callable is running in this pass."""

    name: str
    log: ExecutionLog
    spawn_names: set[str] = field(default_factory=set)

    def claim(self, spawn_name: str, kind: str) -> None:
        if spawn_name in self.spawn_names:
            raise InvalidStepArgument(
                f"{kind} {spawn_name!r}: the name is already used in branch {self.name!r}; "
                "each spawn/spawn_each of a branch needs its own name"
            )
        self.spawn_names.add(spawn_name)


def branch(
    workflow: DurableWorkflow, name: str, dispatch_callable: Any, *, automerge: bool = False
) -> None:
    run = workflow._pass
    step = step_name("branch", name)
    run.claim_step(step)
    if run.dispatching is not None:
        raise InvalidStepArgument(
            f"branch {name!r} is nested inside the dispatch of branch {run.dispatching.name!r}: "
            "nested branches are not supported (open it after the outer one or in a child workflow)"
        )
    func = _dispatch_callable(workflow, dispatch_callable, name)
    if not isinstance(automerge, bool):
        raise InvalidStepArgument(
            f"branch {name!r}: automerge must be True or False, got {automerge!r}"
        )

    log = run.steps.get(step)
    if log is None or log.state != COMPLETED:
        now = clock.now()
        if log is None:
            log = run.steps.create(
                step,
                state=PENDING,
                attempts=1,
                started_at=now,
                last_executed_at=now,
                metadata={"automerge": automerge, "sealed": False, "cursors": {}},
            )
        else:  # a previous pass crashed mid-dispatch: resume from the stored cursors
            run.steps.update(log, attempts=log.attempts + 1, last_executed_at=now)
        run.dispatching = Dispatching(name, log)
        try:
            func()
        finally:
            run.dispatching = None
        run.steps.update(
            log,
            state=COMPLETED,
            completed_at=clock.now(),
            metadata={**(log.metadata or {}), "sealed": True},
        )
    run.branches[name] = log
    if automerge:
        from .merge import merge_branches  # here: merge imports this module

        merge_branches(workflow, name)


def spawn(workflow: DurableWorkflow, name: str, workflow_class: Any, /, **kwargs: Any) -> None:
    run = workflow._pass
    scope = _current(run, "spawn")
    validate_name(name, what="spawn name")
    child = _child(run, scope, name, workflow_class, kwargs, what=f"spawn {name!r}")
    scope.claim(name, "spawn")
    _dispatch_batch(run, scope, [child])


def spawn_each(
    workflow: DurableWorkflow,
    name: str,
    source: Any,
    build: Callable[[Any], Any],
    *,
    of: int = 1000,
) -> None:
    run = workflow._pass
    scope = _current(run, "spawn_each")
    validate_name(name, what="spawn_each name")
    what = f"spawn_each {name!r}"
    if not callable(build):
        raise InvalidStepArgument(
            f"{what}: build must be a callable taking one item, got {build!r}"
        )
    if not isinstance(of, int) or isinstance(of, bool) or of < 1:
        raise InvalidStepArgument(f"{what}: of must be a positive int (the batch size), got {of!r}")
    scope.claim(name, "spawn_each")
    size = batch_size(of, run.db)
    cursor = (scope.log.metadata or {}).get("cursors", {}).get(name)
    if isinstance(source, Manager):
        source = source.all()
    batches: Iterator[tuple[list, Sequence, dict]]
    if isinstance(source, QuerySet):
        batches = _queryset_batches(source, size, cursor, what)
    else:
        batches = _iterable_batches(source, size, cursor, what)
    for items, suffixes, new_cursor in batches:
        children = []
        for item, suffix in zip(items, suffixes, strict=True):
            workflow_class, kwargs = _built(build(item), what)
            children.append(
                _child(run, scope, f"{name}_{suffix}", workflow_class, kwargs, what=what)
            )
        _dispatch_batch(run, scope, children, cursor=(name, new_cursor))


def ensure_merged(workflow: DurableWorkflow) -> None:
    """The completion gate: every branch opened in this pass has a completed merge.

    Answered from the step-log view the branch already loaded, so it costs no query.
    """
    run = workflow._pass
    merged: set[str] = set()
    for name in run.steps.names():
        branches = merge_branches(name)
        log = run.steps.get(name)  # present: names() lists the view's own logs
        if branches is not None and log is not None and log.state == COMPLETED:
            merged.update(branches)
    for name in run.branches:
        if name not in merged:
            raise UnmergedBranchError(
                f"branch {name!r} was opened but never merged: call self.merge_branches({name!r}) "
                f"before perform() returns, or open it with "
                f"self.branch({name!r}, ..., automerge=True)"
            )


# -- helpers ---------------------------------------------------------------------------------------
def batch_size(of: int, db: str) -> int:
    """``of``, capped so one bulk INSERT of child rows stays within the bind-variable limit
    (SQLite: 999 as Django declares it, i.e. 62 rows of 16 columns)."""
    columns = sum(1 for f in Workflow._meta.concrete_fields if not f.primary_key)
    limit = connections[db].features.max_query_params or DEFAULT_MAX_QUERY_PARAMS
    return max(1, min(of, limit // columns))


def _current(run: Pass, kind: str) -> Dispatching:
    if run.dispatching is None:
        raise NotInBranchError(
            f"{kind}() must be called inside a branch's dispatch callable: "
            f"self.branch(name, self.dispatch_method) with {kind}() in dispatch_method"
        )
    return run.dispatching


def _dispatch_callable(workflow: DurableWorkflow, value: Any, name: str) -> Callable[[], Any]:
    if isinstance(value, str):
        func = getattr(workflow, value, None)
        if callable(func):
            return func
        raise InvalidStepArgument(
            f"branch {name!r}: {type(workflow).__name__} has no method {value!r}"
        )
    if callable(value):
        return value
    raise InvalidStepArgument(
        f"branch {name!r}: dispatch must be a method name or a callable, got {value!r}"
    )


def _child(
    run: Pass, scope: Dispatching, suffix: str, workflow_class: Any, kwargs: Any, *, what: str
) -> tuple[str, str, dict[str, Any]]:
    """(job_class, key, kwargs) of one child, validated here because the bulk path bypasses
    ``perform_later``'s guard (key type/length, keyword-only, reserved and JSON kwargs)."""
    from ..workflow import DurableWorkflow  # here: workflow imports the primitives

    where = f"{what} in branch {scope.name!r}"
    if not (
        isinstance(workflow_class, type)
        and issubclass(workflow_class, DurableWorkflow)
        and workflow_class is not DurableWorkflow
    ):
        raise InvalidStepArgument(
            f"{where}: expected a DurableWorkflow subclass, got {workflow_class!r}"
        )
    if not isinstance(kwargs, dict):
        raise InvalidStepArgument(f"{where}: child kwargs must be a dict, got {kwargs!r}")
    key = f"{run.key}${scope.name}${suffix}"
    try:
        job_class = workflow_class.job_class()
        validate_key(key, child=True)
        kwargs = validate_kwargs((), kwargs)
        check_perform_arguments(workflow_class, kwargs)
    except (TypeError, ValueError) as error:
        raise InvalidStepArgument(f"{where}: {error}") from None
    return job_class, key, kwargs


def _built(value: Any, what: str) -> tuple[Any, Any]:
    """``build(item)`` returns a workflow class or ``(class, kwargs)``."""
    if isinstance(value, tuple) and len(value) == 2:
        return value
    if isinstance(value, type):
        return value, {}
    raise InvalidStepArgument(
        f"{what}: build(item) must return a workflow class or (class, kwargs), got {value!r}"
    )


def _queryset_batches(
    source: QuerySet, size: int, cursor: dict | None, what: str
) -> Iterator[tuple[list, list, dict]]:
    """Keyset batches by primary key, from the stored cursor (exclusive)."""
    query = source.query
    if query.order_by or query.extra_order_by:
        raise NotExecutableError(
            f"{what}: the QuerySet has an explicit order_by(); spawn_each streams a QuerySet by "
            "primary key "
            "(keyset batches, resumable after a crash), so remove the ordering"
        )
    if query.is_sliced:
        raise InvalidStepArgument(
            f"{what}: a sliced QuerySet cannot be streamed by primary key; filter it instead"
        )
    if source._iterable_class is not ModelIterable:
        raise InvalidStepArgument(
            f"{what}: pass a QuerySet of model instances (not values()/values_list())"
        )
    ordered = source.order_by("pk")
    last = cursor.get("pk") if cursor else None
    while True:
        page = list((ordered if last is None else ordered.filter(pk__gt=last))[:size])
        if not page:
            return
        last = json_pk(page[-1].pk)
        yield page, [item.pk for item in page], {"pk": last}
        if len(page) < size:
            return


def _iterable_batches(
    source: Iterable, size: int, cursor: dict | None, what: str
) -> Iterator[tuple[list, range, dict]]:
    """Batches by position, skipping the ``index`` items a previous pass already dispatched."""
    try:
        iterator = iter(source)
    except TypeError:
        raise InvalidStepArgument(
            f"{what}: the source must be a QuerySet or an iterable, got {source!r}"
        ) from None
    index = cursor.get("index", 0) if cursor else 0
    iterator = islice(iterator, index, None)
    while page := list(islice(iterator, size)):
        start, index = index, index + len(page)
        yield page, range(start, index), {"index": index}


def _dispatch_batch(
    run: Pass,
    scope: Dispatching,
    children: list[tuple[str, str, dict[str, Any]]],
    cursor: tuple[str, dict] | None = None,
) -> None:
    """Insert (ignoring existing rows), enqueue the idle never-started ones, advance the cursor:
    one transaction (the enqueue is in it with the ORM broker, on commit otherwise)."""
    now = clock.now()
    rows = [
        Workflow(
            job_class=job_class,
            key=key,
            kwargs=kwargs,
            options={},
            context={},
            state=IDLE,
            next_run_at=now,  # born scheduled: the overdue sweep re-sends a lost first delivery
            # the parent's due time, unless the child's class sets its own (at its first pass)
            deadline_at=run.row.deadline_at,
            parent_execution_log_id=scope.log.pk,
            created=now,
            modified=now,
        )
        for job_class, key, kwargs in children
    ]
    wanted = {(job_class, key) for job_class, key, _ in children}
    log = scope.log
    with transaction.atomic(using=run.db):
        Workflow.objects.bulk_create(rows, batch_size=len(rows), ignore_conflicts=True)
        # Each first delivery carries its due time as a token, like perform_later's: a scheduled
        # delivery, whose first pass writes its lock with its first write.
        idle = [
            (job_class, key, {"token": dispatch.token_for(due)} if due is not None else {})
            for job_class, key, due in Workflow.objects.filter(
                key__in=[key for _, key, _ in children],
                state=IDLE,
                started_at__isnull=True,
            ).values_list("job_class", "key", "next_run_at")
            if (job_class, key) in wanted
        ]
        if idle:
            dispatch.enqueue_many(idle)
        if cursor is not None:
            name, position = cursor
            metadata = dict(log.metadata or {})
            metadata["cursors"] = {**metadata.get("cursors", {}), name: position}
            run.steps.update(log, metadata=metadata)
