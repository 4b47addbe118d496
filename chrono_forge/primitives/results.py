"""``branch_results``: read the results of a merged branch's children, streamed by primary key.

Not a step: it writes nothing. Once a branch's merge completed, every child of the branch is
completed, and a completed run's result never changes, so every pass (a replay included) reads the
same sequence. The children are read in keyset pages of ``of`` rows (``id > last ORDER BY id``, one
range of the ``(parent_execution_log, state, id)`` index), so memory holds one page whatever the
number of children, and the number of queries is ``N // of + 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidStepArgument, UnknownBranchError, UnmergedBranchError
from ..models import Workflow
from ..step_names import merge_branches
from ..steps import COMPLETED
from ..validation import step_name, validate_name

if TYPE_CHECKING:  # pragma: no cover
    from ..executor import Pass
    from ..workflow import DurableWorkflow


def branch_results(workflow: DurableWorkflow, name: str, *, of: int = 1000) -> Iterator[tuple]:
    """Checks the call at once (a bad name, a branch never opened or not merged raise here, not at
    the first ``next()``), then returns the generator of ``(child_key, result)``."""
    run = workflow._pass
    validate_name(name, what="branch_results branch name", forbidden="$,")
    if not isinstance(of, int) or isinstance(of, bool) or of < 1:
        raise InvalidStepArgument(
            f"branch_results({name!r}): of must be a positive int (the page size), got {of!r}"
        )
    log = run.steps.get(step_name("branch", name))
    if log is None:
        raise UnknownBranchError(
            f"branch_results({name!r}): branch {name!r} was never opened; "
            f"call self.branch({name!r}, ...) and merge it first"
        )
    if not _merged(run, name):
        raise UnmergedBranchError(
            f"branch_results({name!r}): branch {name!r} is not merged yet; call "
            f"self.merge_branches({name!r}) (or open it with automerge=True) before reading its "
            "results"
        )
    return _stream(log.pk, of)


def _merged(run: Pass, name: str) -> bool:
    """A completed merge of ``name`` is in this pass's step view (no query)."""
    for step in run.steps.names():
        branches = merge_branches(step)
        log = run.steps.get(step)  # present: names() lists the view's own logs
        if branches is not None and name in branches and log is not None and log.state == COMPLETED:
            return True
    return False


def _stream(branch_log_id: Any, of: int) -> Iterator[tuple[str, Any]]:
    children = (
        Workflow.objects.filter(
            parent_execution_log_id=branch_log_id, state=Workflow.STATE.completed
        )
        .order_by("pk")
        .values_list("pk", "key", "result")
    )
    last = None
    while True:
        page = list((children if last is None else children.filter(pk__gt=last))[:of])
        for _pk, key, result in page:
            yield key, result
        if len(page) < of:
            return
        last = page[-1][0]
        del page
