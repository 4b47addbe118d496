"""``patched`` and ``deprecate_patch``: change ``perform()`` safely while runs are in flight.

``patched(change_id)`` answers whether this run reaches the call for the first time under code that
has the change. The answer is remembered in a marker, ``patch$<change id>`` (born completed, its
``result`` the answer), so every later pass gets the same answer from the pass's step view, with no
statement.

The first answer is read from the replay frontier. Every pass replays ``perform()`` from the top and
each primitive claims its step as it goes; when the call is reached while steps that earlier passes
recorded are still unclaimed, the run went past this point under the old code (those steps come
after it), so it keeps the old path: ``False``. When every recorded step was replayed already, the
run is at the frontier, reaching this point for the first time: ``True``. Patch markers themselves,
lifecycle markers and repetition logs are not part of the frontier (see
:func:`chrono_forge.step_names.revisited_by_replay`).

The first answer costs one INSERT (a new run's first pass included); a replayed one costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import clock, step_names
from ..validation import step_name

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import DurableWorkflow

#: How a DuplicateStepName of a change id tells the user to fix it.
ADVICE = "Each patched()/deprecate_patch() call needs its own change id within one pass."


def marker_name(change_id: object) -> str:
    """``patch$<change id>``, validated: a non-empty str without ``$`` or NUL (InvalidStepName)."""
    return step_name(step_names.PATCH, change_id, what="patched() change id")


def patched(workflow: DurableWorkflow, change_id: str) -> bool:
    run = workflow._pass
    step = marker_name(change_id)
    run.claim_step(step, advice=ADVICE)

    log = run.steps.get(step)
    if log is not None:
        return log.result is True
    new_code = not run.unvisited_history()
    now = clock.now()
    run.steps.create_completed(step, now, result=new_code)
    return new_code


def deprecate_patch(workflow: DurableWorkflow, change_id: str) -> None:
    run = workflow._pass
    step = marker_name(change_id)
    run.claim_step(step, advice=ADVICE)
