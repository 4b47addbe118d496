"""The workflow context: a small, validated, JSON key/value store saved with the workflow row."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from . import conf
from .exceptions import ContextValidationError
from .validation import check_text, json_dumps, json_size, to_json


def clean_key(key: Any) -> str:
    """A context key: a non-empty str of at most CONTEXT_KEY_MAX_LENGTH characters that every
    database stores unchanged."""
    if not isinstance(key, str) or not key:
        raise ContextValidationError(f"context keys must be non-empty strings, got {key!r}")
    limit = conf.get("CONTEXT_KEY_MAX_LENGTH")
    if len(key) > limit:
        raise ContextValidationError(
            f"context key {key[:40]!r}... is {len(key)} characters; the limit is {limit} "
            "(CONTEXT_KEY_MAX_LENGTH)"
        )
    try:
        check_text(key, "context key")
    except ValueError as error:
        raise ContextValidationError(str(error)) from None
    return key


def clean_value(key: Any, value: Any) -> Any:
    """Validate one context entry; returns a deep copy as stored (never altered: a value JSON
    would change is refused)."""
    clean_key(key)
    limit = conf.get("CONTEXT_VALUE_MAX_BYTES")
    try:
        if isinstance(value, str):  # the common case, without a round trip through JSON
            check_text(value, f"context {key!r}")
            size = len(value.encode())
        else:
            value = to_json(
                value, f"context {key!r}", max_bytes=limit, setting="CONTEXT_VALUE_MAX_BYTES"
            )
            size = json_size(value)
    except (TypeError, ValueError) as error:
        raise ContextValidationError(str(error)) from None
    if size > limit:
        raise ContextValidationError(
            f"context {key!r} is {size} bytes serialised; the limit is {limit} "
            "(CONTEXT_VALUE_MAX_BYTES)"
        )
    return value


def entry_size(key: str, value: Any) -> int:
    """Bytes one entry adds to the stored context: ``"key":value,``."""
    return len(json_dumps(key).encode()) + len(json_dumps(value).encode()) + 2


class Context(MutableMapping[str, Any]):
    """``self.context`` inside a workflow. Writes are validated and tracked; the executor saves the
    context once, at the end of the pass, only if something changed."""

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._data: dict[str, Any] = dict(data or {})
        self.dirty = False
        # Bytes of each entry, measured on the first write (reads cost nothing).
        self._sizes: dict[str, int] | None = None

    # MutableMapping ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store({key: clean_value(key, value)})

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        if self._sizes is not None:
            self._sizes.pop(key, None)
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
            self._store(cleaned)
        return self

    def merge_once(self, values: Mapping[str, Any]) -> Context:
        """Set only absent keys (present ones are skipped unvalidated), atomically."""
        return self.merge({k: v for k, v in values.items() if k not in self._data})

    set_multiple = merge
    set_multiple_once = merge_once

    def _store(self, cleaned: dict[str, Any]) -> None:
        """Write validated entries if the whole context stays within CONTEXT_MAX_BYTES."""
        if self._sizes is None:
            self._sizes = {key: entry_size(key, value) for key, value in self._data.items()}
        sizes = {key: entry_size(key, value) for key, value in cleaned.items()}
        total = 2 + sum(size for key, size in self._sizes.items() if key not in sizes)
        total += sum(sizes.values())
        limit = conf.get("CONTEXT_MAX_BYTES")
        if total > limit:
            raise ContextValidationError(
                f"setting {', '.join(map(repr, cleaned))} would make the context {total} bytes "
                f"serialised; the limit is {limit} (CONTEXT_MAX_BYTES)"
            )
        self._data.update(cleaned)
        self._sizes.update(sizes)
        self.dirty = True

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the stored data."""
        return copy.deepcopy(self._data)
