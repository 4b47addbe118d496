"""The workflow context: a small, validated, JSON key/value store saved with the workflow row."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from . import conf
from .exceptions import ContextValidationError
from .validation import json_dumps, json_size

JSON_SCALARS = (str, int, float, bool, type(None))


def _check_types(value: Any, path: str) -> None:
    if isinstance(value, JSON_SCALARS):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_types(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ContextValidationError(f"context {path}: dict key {key!r} is not a JSON key")
            _check_types(item, f"{path}.{key}")
        return
    raise ContextValidationError(
        f"context {path}: {type(value).__name__} is not allowed "
        "(use str, int, float, bool, None, list or dict)"
    )


def clean_value(key: Any, value: Any) -> Any:
    """Validate one context entry; returns a deep, JSON-normalised copy (dict keys become strings)."""
    if not isinstance(key, str) or not key or "\x00" in key:
        raise ContextValidationError(
            f"context keys must be non-empty strings without NUL, got {key!r}"
        )
    _check_types(value, repr(key))
    try:
        size = json_size(value)
    except ValueError as exc:  # NaN / Infinity
        raise ContextValidationError(f"context {key!r}: {exc}") from None
    limit = conf.get("CONTEXT_VALUE_MAX_BYTES")
    if size > limit:
        raise ContextValidationError(
            f"context {key!r} is {size} bytes serialised; the limit is {limit}"
        )
    if isinstance(value, (dict, list)):
        import json

        return json.loads(json_dumps(value))
    return value


class Context(MutableMapping[str, Any]):
    """``self.context`` inside a workflow. Writes are validated and tracked; the executor saves the
    context once, at the end of the pass, only if something changed."""

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._data: dict[str, Any] = dict(data or {})
        self.dirty = False

    # MutableMapping ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = clean_value(key, value)
        self.dirty = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.dirty = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Context({self._data!r})"

    # chrono_forge extras ---------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def set_once(self, key: str, value: Any) -> bool:
        """Set ``key`` only if absent; True when it was set."""
        if key in self._data:
            return False
        self[key] = value
        return True

    def merge(self, values: Mapping[str, Any]) -> Context:
        """Set several keys atomically: one invalid value writes nothing."""
        cleaned = {key: clean_value(key, value) for key, value in values.items()}
        if cleaned:
            self._data.update(cleaned)
            self.dirty = True
        return self

    def merge_once(self, values: Mapping[str, Any]) -> Context:
        """Set only absent keys (present ones are skipped unvalidated), atomically."""
        return self.merge({k: v for k, v in values.items() if k not in self._data})

    set_multiple = merge
    set_multiple_once = merge_once

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the stored data."""
        return copy.deepcopy(self._data)
