"""``__prefix``: a case-sensitive "starts with" that an index serves on every database.

Django's ``startswith`` is ``LIKE 'abc%'``. SQLite's LIKE ignores ASCII case, so SQLite never
serves it from an index; there ``prefix`` is the range ``col >= 'abc' AND col < 'abd'`` (SQLite
compares text bytewise, so the range is exactly the rows starting with ``abc``, case-sensitive).
Elsewhere it is Django's ``startswith`` (PostgreSQL serves ``LIKE 'abc%'`` from a
``varchar_pattern_ops`` index whatever the database's collation).

It is registered on the indexed columns that are searched by prefix (a workflow's key, a step
log's and an error log's step name), not on every CharField of the project:

    Workflow.objects.filter(key__prefix="order-12")
"""

from __future__ import annotations

from django.db.models import Lookup
from django.db.models.lookups import StartsWith

#: The largest code point: a prefix ending in it has no successor string to bound a range with.
_MAX = chr(0x10FFFF)


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None if none)."""
    stripped = prefix.rstrip(_MAX)
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not valid in UTF-8 text
        last = 0xE000
    return stripped[:-1] + chr(last)


class Prefix(Lookup):
    lookup_name = "prefix"
    prepare_rhs = False

    def get_prep_lookup(self):
        if not isinstance(self.rhs, str):
            raise TypeError(f"__prefix takes a str, got {type(self.rhs).__name__}")
        return self.rhs

    def as_sql(self, compiler, connection):
        upper = successor(self.rhs) if connection.vendor == "sqlite" else None
        if upper is None:
            return StartsWith(self.lhs, self.rhs).as_sql(compiler, connection)
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"({lhs} >= %s AND {lhs} < %s)", [*lhs_params, self.rhs, upper]
