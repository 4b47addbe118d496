"""Index classes of chrono_forge's models that depend on how the database stores a table."""

from __future__ import annotations

from django.db import models
from django.db.backends.ddl_references import Statement

#: Primary-key fields that SQLite stores as the rowid (``INTEGER PRIMARY KEY``): the table is then
#: a b-tree of its ids, every column of every row in it.
_ROWID_KEYS = ("AutoField", "BigAutoField", "SmallAutoField")


class RowidTableIndex(models.Index):
    """An index created only where the table itself is the primary key's b-tree: SQLite with an
    integer primary key. There an index of the ids alone is a narrow copy of the key that a walk
    over the ids (an OFFSET page, a COUNT) reads instead of every row. Elsewhere (PostgreSQL's
    primary-key index, SQLite's index of a UUID key) the primary key already is such an index, so
    this one would be the same entries written again by every INSERT: it is not created, and its
    SQL is a ``DROP INDEX IF EXISTS`` (which also removes one an earlier version created)."""

    def wanted(self, model, schema_editor) -> bool:
        connection = schema_editor.connection
        return connection.vendor == "sqlite" and model._meta.pk.get_internal_type() in _ROWID_KEYS

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if self.wanted(model, schema_editor):
            return super().create_sql(model, schema_editor, using=using, **kwargs)
        return self._drop_if_exists(schema_editor)

    def remove_sql(self, model, schema_editor, **kwargs):
        if self.wanted(model, schema_editor):
            return super().remove_sql(model, schema_editor, **kwargs)
        return self._drop_if_exists(schema_editor)

    def _drop_if_exists(self, schema_editor) -> Statement:
        return Statement("DROP INDEX IF EXISTS %(name)s", name=schema_editor.quote_name(self.name))
