"""Boundary validation: keys, kwargs, step names and JSON values, checked before any is stored."""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import conf
from .exceptions import InvalidStepName
from .retry import coerce

if TYPE_CHECKING:  # for annotations only: validation is a leaf, it imports no engine module
    from .workflow import DurableWorkflow

RESERVED_KWARGS = frozenset({"attempt", "retry_counts", "retry_workflow"})
KEY_MAX_LENGTH = 255
#: The longest cancellation reason (``Workflow.cancel_reason``).
REASON_MAX_LENGTH = 255
STEP_NAME_MAX_LENGTH = 255
#: A message topic; ``receive$<topic>`` must still fit in a step name.
TOPIC_MAX_LENGTH = 200
IDEMPOTENCY_KEY_MAX_LENGTH = 255


#: How deeply lists and dicts may nest in a stored JSON value.
JSON_MAX_DEPTH = 64

#: Python writes floats of this magnitude in exponent notation, which PostgreSQL's jsonb reads back
#: as an integer (``1e16`` becomes ``10000000000000000``, ``1e308`` an int that is not even equal).
FLOAT_MAX_MAGNITUDE = 1e16

#: Integers longer than this cannot be converted to text (Python's 4300-digit guard).
INT_MAX_BITS = 13_000

#: ``\u0000`` not itself escaped (preceded by an even number of backslashes) in JSON text.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
NUL_MESSAGE = "NUL characters (\\x00) cannot be stored in JSON: PostgreSQL's jsonb rejects them"


def json_dumps(value: Any) -> str:
    """Compact, strict JSON that every supported database stores: no NaN/Infinity and no NUL
    character (PostgreSQL's jsonb rejects both, SQLite would accept them)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError(NUL_MESSAGE)
    return text


def check_text(text: str, what: str) -> None:
    """A string every database stores unchanged: no NUL, no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        raise ValueError(f"{what}: {NUL_MESSAGE}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what}: the lone surrogate {text[error.start]!r} at position {error.start} is not "
            "UTF-8 and cannot be stored (decode bytes with errors='replace' first)"
        ) from None


def check_json(value: Any, what: str, *, max_bytes: int, setting: str = "") -> None:
    """Refuse a value that would not be stored and read back unchanged on every database.

    TypeError for what JSON cannot hold as given (tuples, sets, bytes, objects, non-string dict
    keys); ValueError for values a database would alter or reject (NaN/infinite floats, floats of
    magnitude >= 1e16 or -0.0 on PostgreSQL, NUL or lone surrogates in any string or key), nesting
    deeper than JSON_MAX_DEPTH, circular references, and more than ``max_bytes`` (checked as the
    walk goes, so a huge or shared-reference value is refused without serialising it).
    """
    limit = f"{max_bytes} bytes ({setting})" if setting else f"{max_bytes} bytes"
    _check(value, what, (), 0, set(), [max_bytes], limit)


def _where(what: str, path: tuple) -> str:
    return what + "".join(f"[{part!r}]" for part in path)


def _spend(budget: list[int], amount: int, what: str, limit: str) -> None:
    budget[0] -= amount
    if budget[0] < 0:
        raise ValueError(f"{what} is larger than the limit of {limit} as JSON")


def _check(value, what, path, depth, active, budget, limit) -> None:
    if value is None or isinstance(value, bool):
        _spend(budget, 4, what, limit)
    elif isinstance(value, str):
        check_text(value, _where(what, path))
        _spend(budget, len(value) + 2, what, limit)
    elif isinstance(value, int):
        if value.bit_length() > INT_MAX_BITS:  # Python refuses to print (and json to dump) it
            raise ValueError(f"{_where(what, path)}: the integer has more than 3900 digits")
        _spend(budget, 1 + value.bit_length() * 3 // 10, what, limit)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_where(what, path)}: {value!r} is not a JSON number")
        if abs(value) >= FLOAT_MAX_MAGNITUDE:
            raise ValueError(
                f"{_where(what, path)}: the float {value!r} would be read back from PostgreSQL "
                "as an integer; pass an int (or a string) for values of 1e16 or more"
            )
        if value == 0 and math.copysign(1, value) < 0:
            raise ValueError(f"{_where(what, path)}: -0.0 would be read back as 0.0; pass 0.0")
        _spend(budget, 1, what, limit)
    elif isinstance(value, (list, dict)):
        if depth >= JSON_MAX_DEPTH:
            raise ValueError(f"{_where(what, path)}: nested deeper than {JSON_MAX_DEPTH} levels")
        if id(value) in active:
            raise ValueError(f"{_where(what, path)}: circular reference")
        active.add(id(value))
        _spend(budget, 2, what, limit)
        if isinstance(value, list):
            for index, item in enumerate(value):
                _spend(budget, 1, what, limit)
                _check(item, what, path + (index,), depth + 1, active, budget, limit)
        else:
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"{_where(what, path)}: the dict key {key!r} is a {type(key).__name__}; "
                        "JSON keys are strings (it would come back as a string)"
                    )
                check_text(key, f"{_where(what, path)} key {key[:40]!r}")
                _spend(budget, len(key) + 4, what, limit)
                _check(item, what, path + (key,), depth + 1, active, budget, limit)
        active.discard(id(value))
    elif isinstance(value, tuple):
        raise TypeError(
            f"{_where(what, path)}: tuples are refused (JSON would turn it into a list); "
            "pass a list"
        )
    else:
        raise TypeError(
            f"{_where(what, path)}: {type(value).__name__} {_short(value)} is not JSON "
            "(use str, int, float, bool, None, list or dict)"
        )


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        return "object"
    return text if len(text) <= 80 else text[:77] + "..."


def to_json(value: Any, what: str, *, max_bytes: int, setting: str = "") -> Any:
    """A deep copy of ``value`` as it will be stored, after :func:`check_json` (which raises
    TypeError/ValueError naming ``what``) and an exact size check: equal to ``value``, never
    altered."""
    check_json(value, what, max_bytes=max_bytes, setting=setting)
    text = json_dumps(value)
    size = len(text.encode())
    if size > max_bytes:
        limit = f"{max_bytes} bytes ({setting})" if setting else f"{max_bytes} bytes"
        raise ValueError(
            f"{what} is {size} bytes as JSON; the limit is {limit}: store large data elsewhere "
            "and pass a reference"
        )
    return json.loads(text)


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
    check_text(key, "workflow key")
    if "$" in key and not child:
        raise ValueError(
            f"workflow key {key!r} must not contain '$' (reserved step/child separator)"
        )
    if len(key) > KEY_MAX_LENGTH:
        raise ValueError(f"workflow key is {len(key)} characters; the limit is {KEY_MAX_LENGTH}")
    return key


def validate_reason(reason: Any) -> str:
    """A cancellation reason: a str of at most REASON_MAX_LENGTH characters that every database
    stores unchanged (empty is allowed: no reason given)."""
    if not isinstance(reason, str):
        raise TypeError(f"a cancellation reason must be a str, got {type(reason).__name__}")
    check_text(reason, "cancellation reason")
    if len(reason) > REASON_MAX_LENGTH:
        raise ValueError(
            f"a cancellation reason is at most {REASON_MAX_LENGTH} characters, got {len(reason)}"
        )
    return reason


def validate_kwargs(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword-only, not reserved, JSON that is stored unchanged, at most KWARGS_MAX_BYTES;
    returns the copy that gets stored."""
    if args:
        raise TypeError(
            f"workflows take keyword arguments only (key first, then name=value); got {len(args)} "
            f"extra positional argument(s) {_short(args)}"
        )
    reserved = sorted(RESERVED_KWARGS.intersection(kwargs))
    if reserved:
        raise ValueError(f"{', '.join(map(repr, reserved))} is reserved for chrono_forge's own use")
    limit = conf.get("KWARGS_MAX_BYTES")
    return to_json(kwargs, "workflow kwargs", max_bytes=limit, setting="KWARGS_MAX_BYTES")


def validate_deadline(value: Any, what: str, *, seconds: bool = True) -> timedelta | None:
    """A workflow deadline: None (no deadline of its own) or a positive, finite duration of at
    most LONGEST_DURATION, as a ``timedelta`` (or, with ``seconds``, a number of seconds).
    TypeError/ValueError naming ``what`` otherwise."""
    if value is None:
        return None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not isinstance(value, timedelta) and not (seconds and numeric):
        expected = "a timedelta, a number of seconds or None" if seconds else "a timedelta or None"
        raise TypeError(f"{what} must be {expected}, got {type(value).__name__} {_short(value)}")
    try:
        delta = conf.as_duration(value)
    except ValueError as error:
        raise ValueError(f"{what} {error}") from None
    if delta <= timedelta(0):
        raise ValueError(f"{what} must be a positive duration, got {_short(value)}")
    return delta


def validate_options(options: Any, *, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` as stored; with ``kwargs``, the two together fit in KWARGS_MAX_BYTES. A
    ``"deadline"`` (see :func:`validate_deadline`) is stored as a number of seconds."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    if "deadline" in options:
        deadline = validate_deadline(options["deadline"], 'options["deadline"]')
        options = {**options, "deadline": None if deadline is None else deadline.total_seconds()}
    limit = conf.get("KWARGS_MAX_BYTES")
    if kwargs:
        limit = max(limit - len(json_dumps(kwargs).encode()), 0)
    return to_json(
        options, "workflow options (with the kwargs)", max_bytes=limit, setting="KWARGS_MAX_BYTES"
    )


def validate_topic(topic: Any) -> str:
    """A message topic: a non-empty str of at most TOPIC_MAX_LENGTH characters, without ``$``
    (``receive$<topic>`` is the default step name of the receive that consumes it)."""
    if not isinstance(topic, str):
        raise TypeError(f"message topic must be a str, got {type(topic).__name__} {_short(topic)}")
    if not topic:
        raise ValueError("message topic must not be empty")
    check_text(topic, "message topic")
    if "$" in topic:
        raise ValueError(f"message topic {topic!r} must not contain '$' (reserved step separator)")
    if len(topic) > TOPIC_MAX_LENGTH:
        raise ValueError(
            f"message topic is {len(topic)} characters; the limit is {TOPIC_MAX_LENGTH}"
        )
    return topic


def validate_idempotency_key(value: Any) -> str | None:
    """None, or a non-empty str of at most IDEMPOTENCY_KEY_MAX_LENGTH characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"idempotency_key must be a str or None, got {type(value).__name__} {_short(value)}"
        )
    if not value:
        raise ValueError("idempotency_key must not be empty (pass None for no key)")
    check_text(value, "idempotency_key")
    if len(value) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValueError(
            f"idempotency_key is {len(value)} characters; the limit is {IDEMPOTENCY_KEY_MAX_LENGTH}"
        )
    return value


def validate_payload(payload: Any) -> Any:
    """A message payload as stored: JSON stored unchanged, at most MESSAGE_MAX_BYTES."""
    limit = conf.get("MESSAGE_MAX_BYTES")
    return to_json(payload, "message payload", max_bytes=limit, setting="MESSAGE_MAX_BYTES")


def validate_name(name: Any, *, what: str = "step name", forbidden: str = "$") -> str:
    """A user-chosen name segment: non-empty str without reserved characters."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidStepName(f"{what} must be a non-empty string without NUL, got {name!r}")
    try:
        check_text(name, what)
    except ValueError as error:
        raise InvalidStepName(str(error)) from None
    bad = [c for c in forbidden if c in name]
    if bad:
        raise InvalidStepName(
            f"{what} {name!r} must not contain {' or '.join(map(repr, bad))} (reserved)"
        )
    return name


def step_name(kind: str, name: Any, *, forbidden: str = "$", what: str | None = None) -> str:
    """``<kind>$<name>``, validated (``what`` names the segment in errors; default
    ``"<kind> name"``)."""
    full = f"{kind}${validate_name(name, what=what or f'{kind} name', forbidden=forbidden)}"
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
    time instead of leaving its first workflow stuck: the class ``retry_policy`` and
    ``on_cancel_retry_policy``, ``perform``'s signature (keyword-only, no reserved names), an
    ``on_cancel(self, reason)`` hook's, the class ``deadline`` and the length of the class path."""
    name = cls.__qualname__
    if "deadline" in cls.__dict__:
        validate_deadline(cls.__dict__["deadline"], f"{name}.deadline", seconds=False)
    if "retry_policy" in cls.__dict__:
        try:
            coerce(cls.__dict__["retry_policy"])
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}.retry_policy: {error}") from None
    if "on_cancel_retry_policy" in cls.__dict__:
        try:
            coerce(cls.__dict__["on_cancel_retry_policy"])
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}.on_cancel_retry_policy: {error}") from None
    if "perform" in cls.__dict__:
        check_perform(name, cls.__dict__["perform"])
    if "on_cancel" in cls.__dict__:
        check_on_cancel(name, cls.__dict__["on_cancel"])
    path = f"{cls.__module__}.{name}"
    if "<locals>" not in name and len(path) > JOB_CLASS_MAX_LENGTH:
        raise TypeError(
            f"the class path {path!r} is {len(path)} characters; workflow rows store at most "
            f"{JOB_CLASS_MAX_LENGTH} (shorten the module or class name)"
        )


def check_on_cancel(name: str, hook: Any) -> None:
    """``on_cancel`` is a plain method called as ``hook(self, reason)``."""
    usage = "def on_cancel(self, reason)"
    if isinstance(hook, (staticmethod, classmethod)) or not inspect.isfunction(hook):
        raise TypeError(f"{name}.on_cancel must be a plain method: {usage}")
    try:
        inspect.signature(hook).bind(None, "reason")
    except TypeError:
        raise TypeError(f"{name}.on_cancel must take (self, reason): {usage}") from None


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


def check_perform_arguments(cls: type[DurableWorkflow], kwargs: dict[str, Any]) -> None:
    """The TypeError ``cls().perform(**kwargs)`` would raise (missing or unexpected arguments),
    raised at the enqueue instead of on the first pass."""
    signature = perform_signature(cls.perform)
    parameters = list(signature.parameters.values())[1:]
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
        unexpected = sorted(set(kwargs) - {p.name for p in parameters})
        if unexpected:  # reported before a missing one: it is usually the same name misspelled
            raise TypeError(
                f"{cls.__qualname__}.perform() got unexpected keyword argument(s) "
                f"{', '.join(map(repr, unexpected))}; it takes "
                f"{', '.join(p.name for p in parameters) or 'no arguments'}"
            )
    try:
        signature.bind(None, **kwargs)
    except TypeError as error:
        raise TypeError(f"{cls.__qualname__}.perform(): {error}") from None


@functools.lru_cache(maxsize=1024)
def perform_signature(perform: Any) -> inspect.Signature:
    """``perform``'s signature, computed once (a fan-out checks every child's kwargs)."""
    return inspect.signature(perform)
