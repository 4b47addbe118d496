"""Boundary validation: keys, kwargs, step names and JSON values, checked before anything is stored."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from .exceptions import InvalidStepName

RESERVED_KWARGS = frozenset({"attempt", "retry_counts", "retry_workflow"})
KEY_MAX_LENGTH = 255
STEP_NAME_MAX_LENGTH = 255


#: ``\u0000`` not itself escaped (preceded by an even number of backslashes) in JSON text.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
NUL_MESSAGE = "NUL characters (\\x00) cannot be stored: PostgreSQL's jsonb rejects them"


def json_dumps(value: Any) -> str:
    """Compact, strict JSON that every supported database stores: no NaN/Infinity and no NUL
    character (PostgreSQL's jsonb rejects both, SQLite would accept them)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError(NUL_MESSAGE)
    return text


def to_json(value: Any, what: str) -> Any:
    """A deep, JSON-normalised copy of ``value`` (dict keys become strings) or a TypeError naming ``what``."""
    try:
        return json.loads(json_dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None


def json_size(value: Any) -> int:
    """Bytes of a value as stored: a string's UTF-8 bytes, anything else's compact JSON."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(NUL_MESSAGE)
        return len(value.encode())
    return len(json_dumps(value).encode())


def validate_key(key: Any, *, child: bool = False) -> str:
    """A workflow key: non-empty str <= 255 chars; ``$`` only in child keys chrono_forge builds."""
    if not isinstance(key, str):
        raise TypeError(f"workflow key must be a str, got {type(key).__name__} {key!r}")
    if not key:
        raise ValueError("workflow key must not be empty")
    if "\x00" in key:
        raise ValueError(f"workflow key {key!r} must not contain NUL characters")
    if "$" in key and not child:
        raise ValueError(
            f"workflow key {key!r} must not contain '$' (reserved step/child separator)"
        )
    if len(key) > KEY_MAX_LENGTH:
        raise ValueError(f"workflow key is {len(key)} characters; the limit is {KEY_MAX_LENGTH}")
    return key


def validate_kwargs(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword-only, not reserved, JSON-serialisable; returns the normalised copy that gets stored."""
    if args:
        raise TypeError(
            f"workflows take keyword arguments only (key first, then name=value); got {len(args)} "
            f"extra positional argument(s) {args!r}"
        )
    reserved = sorted(RESERVED_KWARGS.intersection(kwargs))
    if reserved:
        raise ValueError(f"{', '.join(map(repr, reserved))} is reserved for chrono_forge's own use")
    return to_json(kwargs, "workflow kwargs")


def validate_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    return to_json(options, "workflow options")


def validate_name(name: Any, *, what: str = "step name", forbidden: str = "$") -> str:
    """A user-chosen name segment: non-empty str without reserved characters."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidStepName(f"{what} must be a non-empty string without NUL, got {name!r}")
    bad = [c for c in forbidden if c in name]
    if bad:
        raise InvalidStepName(
            f"{what} {name!r} must not contain {' or '.join(map(repr, bad))} (reserved)"
        )
    return name


def step_name(kind: str, name: str, *, forbidden: str = "$") -> str:
    """``<kind>$<name>``, validated."""
    full = f"{kind}${validate_name(name, what=f'{kind} name', forbidden=forbidden)}"
    if len(full) > STEP_NAME_MAX_LENGTH:
        raise InvalidStepName(
            f"step name {full!r} is longer than {STEP_NAME_MAX_LENGTH} characters"
        )
    return full


# -- workflow definitions --------------------------------------------------------------------------
#: The ``job_class`` column's width.
JOB_CLASS_MAX_LENGTH = 255

#: Keywords of the enqueue API itself: a ``perform`` parameter of that name could never be passed.
ENQUEUE_KEYWORDS = frozenset({"options"})


def check_workflow_class(cls: type) -> None:
    """Checks a DurableWorkflow subclass when it is defined, so a bad definition fails at import
    time instead of leaving its first workflow stuck: the class ``retry_policy``, ``perform``'s
    signature (keyword-only, no reserved names) and the length of the class path."""
    from .retry import coerce

    name = cls.__qualname__
    if "retry_policy" in cls.__dict__:
        try:
            coerce(cls.__dict__["retry_policy"])
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}.retry_policy: {error}") from None
    if "perform" in cls.__dict__:
        check_perform(name, cls.__dict__["perform"])
    path = f"{cls.__module__}.{name}"
    if "<locals>" not in name and len(path) > JOB_CLASS_MAX_LENGTH:
        raise TypeError(
            f"the class path {path!r} is {len(path)} characters; workflow rows store at most "
            f"{JOB_CLASS_MAX_LENGTH} (shorten the module or class name)"
        )


def check_perform(name: str, perform: Any) -> None:
    if isinstance(perform, (staticmethod, classmethod)) or not inspect.isfunction(perform):
        raise TypeError(f"{name}.perform must be a plain method: def perform(self, *, ...)")
    parameters = list(inspect.signature(perform).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"{name}.perform must take self first: def perform(self, *, ...)")
    for parameter in parameters[1:]:
        if parameter.kind not in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(
                f"{name}.perform takes {parameter.name!r} positionally; workflow arguments are "
                f"keyword-only: def perform(self, *, {parameter.name}, ...)"
            )
        if parameter.name in RESERVED_KWARGS or parameter.name in ENQUEUE_KEYWORDS:
            raise TypeError(
                f"{name}.perform: the argument name {parameter.name!r} is reserved by "
                "chrono_forge; rename it"
            )


def check_perform_arguments(cls: type, kwargs: dict[str, Any]) -> None:
    """The TypeError ``cls().perform(**kwargs)`` would raise (missing or unexpected arguments),
    raised at the enqueue instead of on the first pass."""
    try:
        inspect.signature(cls.perform).bind(None, **kwargs)
    except TypeError as error:
        raise TypeError(f"{cls.__qualname__}.perform(): {error}") from None
