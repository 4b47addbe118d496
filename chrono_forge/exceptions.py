"""Exceptions raised by chrono_forge.

Everything public derives from :class:`ChronoForgeError`. Programming errors that no retry can fix
(bad step names, spawning outside a branch, ...) derive from :class:`NotExecutableError`: they stall
the workflow and propagate to the caller or worker. :class:`HaltExecution` is the internal signal a
primitive raises to end a pass early; it derives from ``BaseException`` so that a user's ``except
Exception:`` around a primitive can never swallow it.
"""

from __future__ import annotations


class ChronoForgeError(Exception):
    """Base class of every chrono_forge error."""


class ExecutionFailedError(ChronoForgeError):
    """A durable step used up its retry budget; the workflow is stalled."""

    def __init__(self, message: str, *, step_name: str | None = None, recorded: bool = False):
        super().__init__(message)
        self.step_name = step_name
        # True when the underlying error is already in ErrorLog (the step recorded it).
        self.recorded = recorded


class WaitConditionNotMet(ExecutionFailedError):
    """A ``wait_until`` condition was still false at its timeout. Uncaught, it stalls the workflow
    like any step that used up its budget; caught, the workflow goes on (replays raise it again)."""


class StepAttemptLost(ChronoForgeError):
    """A step's attempt started and never finished: its worker died in it (killed, out of memory,
    timed out, or exited with ``SystemExit``/``KeyboardInterrupt``). Recorded against that attempt
    and charged to the step's retry policy like any error, so a step that keeps taking its worker
    down fails after ``max_attempts`` and stalls the workflow instead of running forever."""

    def __init__(self, message: str, *, step_name: str | None = None, attempt: int | None = None):
        super().__init__(message)
        self.step_name = step_name
        self.attempt = attempt


class StepTimeout(ChronoForgeError, TimeoutError):
    """A step's attempt ran past its ``timeout``: interrupted in process where a signal can do it
    (the main thread of a worker), found finished too late, or found unfinished by a later pass.
    Charged to the step's retry policy like any error (a ``TimeoutError``, so ``retry_on`` and
    ``discard_on`` lists naming ``TimeoutError`` cover it)."""

    def __init__(
        self,
        message: str,
        *,
        step_name: str | None = None,
        attempt: int | None = None,
        timeout: float | None = None,
    ):
        super().__init__(message)
        self.step_name = step_name
        self.attempt = attempt
        self.timeout = timeout  # seconds


class NotExecutableError(ChronoForgeError):
    """A programming error that retrying cannot fix; it stalls the workflow and propagates."""


class InvalidStepName(NotExecutableError, ValueError):
    """A step name is empty, too long, or holds a reserved character (``$``, ``,`` for merges)."""


class InvalidStepResult(NotExecutableError, TypeError):
    """A step returned a value that cannot be stored (not JSON, or larger than RESULT_MAX_BYTES)."""


class InvalidWorkflowResult(NotExecutableError, TypeError):
    """``perform()`` returned a value that cannot be stored (not JSON, or larger than
    RESULT_MAX_BYTES). Nothing is stored: the workflow is stalled with this error recorded, and an
    operator retry replays ``perform()`` once the code is fixed."""


class ResultNotReadyError(ChronoForgeError):
    """``Cls.result(key)`` or ``Cls.wait_for_result(key)`` of a run that has not completed (it is
    still running, waiting, blocked or cancelled). ``state`` is the run's state then."""

    def __init__(self, message: str, *, state: str | None = None):
        super().__init__(message)
        self.state = state


class ResultTimeout(ResultNotReadyError, TimeoutError):
    """``Cls.wait_for_result(key, timeout=...)``: the run had not completed when the timeout
    passed (``state`` is its last seen state)."""


class WaitForResultInWorkflowError(NotExecutableError):
    """``wait_for_result`` was called inside a workflow pass: a pass must never block on another
    run (merge a branch and read ``branch_results`` instead)."""


class InvalidStepArgument(NotExecutableError, TypeError, ValueError):
    """A primitive got an argument it cannot use (a missing method, a bad duration, ...)."""


class DuplicateStepName(NotExecutableError, ValueError):
    """Two primitive calls in one pass resolved to the same step name; the second would silently
    return the first one's checkpoint. The message names both call sites (``file:line``)."""


class ReplayDivergence(NotExecutableError):
    """A pass started a new step while steps that earlier passes recorded (completed or failed)
    were not replayed yet: ``perform()`` no longer reaches them in the order the run took (a step
    inserted, removed or reordered under a run in flight). Recorded in ``ErrorLog`` as a warning,
    once per workflow and step, and the run goes on; with ``CHRONO_FORGE["REPLAY_DIVERGENCE"] =
    "stall"`` it is raised instead, before the new step is stored, and stalls the run."""

    def __init__(self, message: str, *, step_name: str | None = None, recorded: bool = False):
        super().__init__(message)
        self.step_name = step_name
        self.recorded = recorded


class UnregisteredWorkflowClass(NotExecutableError):
    """A row or a task names a workflow class that is not registered in this process (renamed,
    removed, or defined in code this worker does not run); see :mod:`chrono_forge.registry`."""


class NotInBranchError(NotExecutableError):
    """``spawn``/``spawn_each`` was called outside a ``branch`` dispatch callable."""


class UnmergedBranchError(NotExecutableError):
    """The workflow reached completion with a branch that was never merged, or read
    ``branch_results`` of a branch that is not merged yet."""


class UnknownBranchError(NotExecutableError, ValueError):
    """``merge_branches`` or ``branch_results`` named a branch that was never opened."""


class WorkflowNotRetryableError(ChronoForgeError):
    """``retry_now``/``retry_later`` on a workflow that is not failed or stalled."""


class UnknownWorkflowError(ChronoForgeError, LookupError):
    """A message was sent to a workflow key that does not exist (for that class)."""


class WorkflowFinishedError(ChronoForgeError):
    """A message was sent to a workflow that is completed or cancelled: nothing will consume it."""


class WorkflowNotCancellableError(ChronoForgeError):
    """``cancel`` of a workflow that does not exist (``state`` is None) or already finished
    (``state`` is ``completed`` or ``cancelled``)."""

    def __init__(self, message: str, *, state: str | None = None):
        super().__init__(message)
        self.state = state


class DeadlineExceeded(ChronoForgeError):
    """A run was still unfinished at its deadline (``DurableWorkflow.deadline`` or
    ``options={"deadline": ...}``, counted from its first pass): it was cancelled with the reason
    ``deadline exceeded`` and this error recorded in ErrorLog (never raised to user code)."""


class EnqueueError(ChronoForgeError):
    """The broker refused a workflow's pass; the message says whether anything was stored."""


class ConcurrentExecutionError(ChronoForgeError):
    """Another run holds a fresh lock on this workflow; the duplicate run exits."""


class LongRunningConcurrentExecutionError(ConcurrentExecutionError):
    """This run overran ``MAX_DURATION`` and its lock was taken by another run."""


class ContextValidationError(ChronoForgeError, ValueError):
    """A context key or value is not allowed (type, JSON, or size)."""


class HaltExecution(BaseException):
    """Internal: ends the current pass after a primitive scheduled (or declined) a continuation."""


__all__ = [
    "ChronoForgeError",
    "ExecutionFailedError",
    "WaitConditionNotMet",
    "StepAttemptLost",
    "StepTimeout",
    "NotExecutableError",
    "InvalidStepName",
    "InvalidStepResult",
    "InvalidWorkflowResult",
    "ResultNotReadyError",
    "ResultTimeout",
    "WaitForResultInWorkflowError",
    "InvalidStepArgument",
    "DuplicateStepName",
    "ReplayDivergence",
    "UnregisteredWorkflowClass",
    "NotInBranchError",
    "UnmergedBranchError",
    "UnknownBranchError",
    "WorkflowNotRetryableError",
    "UnknownWorkflowError",
    "WorkflowFinishedError",
    "WorkflowNotCancellableError",
    "DeadlineExceeded",
    "ConcurrentExecutionError",
    "LongRunningConcurrentExecutionError",
    "ContextValidationError",
    "HaltExecution",
]
