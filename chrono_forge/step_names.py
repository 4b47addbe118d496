"""The stored step-name format, in one place.

Every step log's ``step_name`` is one of:

* ``<kind>$<name>`` — a primitive's step (``durably_execute$charge``, ``branch$fan``,
  ``merge$a,b`` whose name is the sorted, comma-joined branch names, ``receive$payment`` whose
  name is the topic unless ``name=`` was given, ``send_to$payment`` likewise, ``patch$add-audit``
  the marker that remembers a ``patched("add-audit")`` decision);
* ``durably_repeat$<name>$<unix seconds>`` — one tick (a *repetition log*) of the coordination
  log ``durably_repeat$<name>``;
* ``$workflow_<marker>$<ref>`` — a lifecycle marker written by the executor:
  ``$workflow_completion$``, ``$workflow_failure$<error log id>``,
  ``$workflow_retry$<unix seconds>``, and ``$workflow_on_cancel$<unix seconds>``, the step of the
  class's ``on_cancel`` hook for the cancellation recorded at that second (a step the hook pass
  runs, not one born completed).

The engine writes these names, cleanup deletes by them, the admin and the command read them: all of
them build, parse and filter through this module, so the conventions cannot drift apart. The format
is stored data; nothing here may change a byte of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import CharField, Func, Q

__all__ = [
    "SEPARATOR",
    "KINDS",
    "COMPLETION_MARKER",
    "FAILURE_MARKER_PREFIX",
    "RETRY_MARKER_PREFIX",
    "ON_CANCEL_MARKER_PREFIX",
    "REPETITION_LOG_PATTERN",
    "StepName",
    "MalformedStepName",
    "PATCH",
    "patch_marker",
    "revisited_by_replay",
    "completion_marker",
    "failure_marker",
    "retry_marker",
    "on_cancel_marker",
    "is_on_cancel_marker",
    "repetition_prefix",
    "repetition_name",
    "tick_seconds",
    "merge_branches",
    "kind_prefix",
    "KindPrefix",
    "repetition_logs_q",
    "coordination_logs_q",
]

SEPARATOR = "$"

#: The primitives' kinds, the first segment of their step names.
KINDS = (
    "durably_execute",
    "durably_repeat",
    "wait",
    "wait_until",
    "continue_if",
    "branch",
    "merge",
    "receive",
    "send_to",
    "patch",
)

#: The kind of a versioning marker: ``patch$<change id>`` records what ``patched(change id)``
#: answered for a run. A marker, not a step a replay must revisit (see :func:`revisited_by_replay`).
PATCH = "patch"

#: Lifecycle markers (an empty kind). The completion marker is the whole name; the others carry a
#: trailing reference.
COMPLETION_MARKER = "$workflow_completion$"
FAILURE_MARKER_PREFIX = "$workflow_failure$"
RETRY_MARKER_PREFIX = "$workflow_retry$"
ON_CANCEL_MARKER_PREFIX = "$workflow_on_cancel$"
MARKERS = ("workflow_completion", "workflow_failure", "workflow_retry", "workflow_on_cancel")

#: A repetition log: ``durably_repeat$<name>$...`` (a second ``$``). The coordination log itself has
#: only one ``$`` and does not match.
REPETITION_LOG_PATTERN = r"^durably_repeat\$[^$]*\$"

_REPEAT = "durably_repeat"
_MERGE = "merge"


class MalformedStepName(ValueError):
    """A stored step name that fits none of the forms this module writes."""


@dataclass(frozen=True)
class StepName:
    """A parsed step name. ``kind`` is ``""`` for a lifecycle marker, whose ``marker`` then names
    it (``"workflow_failure"``) and whose ``ref`` is its trailing segment. A repetition log has
    ``tick`` set to its unix seconds and ``name`` set to its coordination log's name."""

    kind: str
    name: str = ""
    tick: int | None = None
    marker: str = ""
    ref: str = ""

    # -- building ----------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        if not self.kind:
            return f"{SEPARATOR}{self.marker}{SEPARATOR}{self.ref}"
        base = f"{self.kind}{SEPARATOR}{self.name}"
        return base if self.tick is None else f"{base}{SEPARATOR}{self.tick}"

    # -- reading -----------------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: str) -> StepName:
        """The parts of ``raw``; raises :class:`MalformedStepName` for anything this module does not
        write (no ``$``, an unknown kind or marker, a second ``$`` outside a repetition log)."""
        if not isinstance(raw, str):
            raise MalformedStepName(f"a step name is a str, got {type(raw).__name__}")
        kind, sep, rest = raw.partition(SEPARATOR)
        if not sep:
            raise MalformedStepName(f"step name {raw!r} has no {SEPARATOR!r}")
        if kind == "":
            marker, sep, ref = rest.partition(SEPARATOR)
            if not sep or marker not in MARKERS:
                raise MalformedStepName(f"{raw!r} is not a lifecycle marker")
            if marker == "workflow_completion" and ref:
                raise MalformedStepName(f"the completion marker carries nothing, got {raw!r}")
            if marker == "workflow_retry" and not (ref.isascii() and ref.isdigit()):
                raise MalformedStepName(f"a retry marker ends in unix seconds, got {raw!r}")
            if marker == "workflow_on_cancel" and not (ref.isascii() and ref.isdigit()):
                raise MalformedStepName(f"an on_cancel step ends in unix seconds, got {raw!r}")
            if marker == "workflow_failure" and not ref:
                raise MalformedStepName(f"a failure marker ends in an error log id, got {raw!r}")
            return cls("", marker=marker, ref=ref)
        if kind not in KINDS:
            raise MalformedStepName(f"step name {raw!r} has an unknown kind {kind!r}")
        if SEPARATOR in rest:
            name, _, tail = rest.partition(SEPARATOR)
            if kind != _REPEAT or not name or not (tail.isascii() and tail.isdigit()):
                raise MalformedStepName(f"step name {raw!r} has a misplaced {SEPARATOR!r}")
            return cls(kind, name, tick=int(tail))
        if not rest:
            raise MalformedStepName(f"step name {raw!r} has an empty name")
        return cls(kind, rest)

    @staticmethod
    def kind_of(raw: str) -> str:
        """The segment before the first ``$`` (``""`` for a lifecycle marker); never raises."""
        return raw.split(SEPARATOR, 1)[0]

    @property
    def is_marker(self) -> bool:
        return not self.kind

    @property
    def is_repetition(self) -> bool:
        return self.kind == _REPEAT and self.tick is not None

    @property
    def coordination(self) -> str:
        """A repetition log's coordination log name (``durably_repeat$<name>``)."""
        if not self.is_repetition:
            raise ValueError(f"{self.format()!r} is not a repetition log")
        return f"{_REPEAT}{SEPARATOR}{self.name}"

    @property
    def branches(self) -> list[str]:
        """A merge's branch names."""
        if self.kind != _MERGE:
            raise ValueError(f"{self.format()!r} is not a merge")
        return self.name.split(",")


# -- builders --------------------------------------------------------------------------------------
def completion_marker() -> str:
    return COMPLETION_MARKER


def failure_marker(error_log_id: object) -> str:
    return f"{FAILURE_MARKER_PREFIX}{error_log_id}"


def retry_marker(unix_seconds: int) -> str:
    return f"{RETRY_MARKER_PREFIX}{unix_seconds}"


def on_cancel_marker(unix_seconds: int) -> str:
    """The step of the ``on_cancel`` hook of the cancellation recorded at ``unix_seconds``."""
    return f"{ON_CANCEL_MARKER_PREFIX}{unix_seconds}"


def is_on_cancel_marker(raw: object) -> bool:
    """Whether ``raw`` names an ``on_cancel`` hook's step (``$workflow_on_cancel$<seconds>``)."""
    if not isinstance(raw, str) or not raw.startswith(ON_CANCEL_MARKER_PREFIX):
        return False
    ref = raw[len(ON_CANCEL_MARKER_PREFIX) :]
    return ref.isascii() and ref.isdigit()


def patch_marker(change_id: str) -> str:
    """``patch$<change id>`` (the id is validated by the caller)."""
    return f"{PATCH}{SEPARATOR}{change_id}"


def revisited_by_replay(raw: str) -> bool:
    """Whether a replay of ``perform()`` that still follows the run's history visits this step
    again: a primitive's step, and neither a lifecycle marker, a patch marker (code may drop its
    ``patched`` call once every old run drained) nor a repetition log (a repeat's coordination log
    stands for its ticks). Never raises."""
    kind, sep, rest = raw.partition(SEPARATOR)
    return bool(sep) and kind not in ("", PATCH) and not (kind == _REPEAT and SEPARATOR in rest)


def repetition_prefix(coordination: str) -> str:
    """``durably_repeat$<name>$``: what every repetition log of that coordination log starts with.
    Accepts the coordination log's step name or the bare repetition name."""
    if not coordination.startswith(f"{_REPEAT}{SEPARATOR}"):
        coordination = f"{_REPEAT}{SEPARATOR}{coordination}"
    return coordination + SEPARATOR


def repetition_name(coordination: str, unix_seconds: int) -> str:
    return f"{repetition_prefix(coordination)}{unix_seconds}"


def tick_seconds(step_name: str, prefix: str) -> int | None:
    """The unix seconds of a repetition log named ``<prefix><seconds>``, else None. The prefix test
    is done here (not only with SQL LIKE, where ``_`` and ``%`` are wildcards) so that
    ``durably_repeat$a_b`` never matches ``durably_repeat$axb$...``."""
    if not step_name.startswith(prefix):
        return None
    suffix = step_name[len(prefix) :]
    return int(suffix) if suffix.isascii() and suffix.isdigit() else None


def merge_branches(step_name: str) -> list[str] | None:
    """The branch names of a ``merge$a,b`` step name, else None."""
    prefix = kind_prefix(_MERGE)
    return step_name[len(prefix) :].split(",") if step_name.startswith(prefix) else None


# -- query fragments -------------------------------------------------------------------------------
def kind_prefix(kind: str) -> str:
    """``<kind>$`` (``$`` alone for the lifecycle markers, ``kind=""``): a ``startswith`` filter."""
    return f"{kind}{SEPARATOR}"


class KindPrefix(Func):
    """SQL: a step name up to and including its first ``$`` (``''`` when it has none), so
    ``KindPrefix("step_name") == kind_prefix(kind)`` holds exactly for the steps of ``kind``
    (kinds hold no ``$``) and for the lifecycle markers with ``kind=""``.

    Step logs are indexed on it with their id (migration 0009): the newest steps of one kind are
    a backward range of that index, where a ``step_name`` prefix range had to read and sort every
    step of the kind. The ``$`` is written into the SQL, not passed as a parameter: SQLite matches
    an expression index only against the same literal expression."""

    output_field = CharField()
    function = "SUBSTR"
    template = f"SUBSTR(%(expressions)s, 1, INSTR(%(expressions)s, '{SEPARATOR}'))"
    arity = 1

    def as_postgresql(self, compiler, connection, **extra_context):
        template = f"SUBSTR(%(expressions)s, 1, STRPOS(%(expressions)s, '{SEPARATOR}'))"
        return self.as_sql(compiler, connection, template=template, **extra_context)


def repetition_logs_q() -> Q:
    """Step logs that are repetition logs (``durably_repeat$<name>$<ts>``)."""
    return Q(step_name__regex=REPETITION_LOG_PATTERN)


def coordination_logs_q() -> Q:
    """``durably_repeat$<name>`` coordination logs (not their repetition logs)."""
    return Q(step_name__prefix=kind_prefix(_REPEAT)) & ~repetition_logs_q()
