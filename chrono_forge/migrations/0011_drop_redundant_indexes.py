# Every index of a table is written by every INSERT and DELETE of its rows (a step's log, the
# pruning of repetition logs), so the ones another index already serves go:
#
# * the automatic indexes of three foreign keys, each the leading column of an index that stays:
#   ExecutionLog.workflow (the unique chrono_forge_log_wf_step: workflow, step_name),
#   Message.workflow (chrono_forge_msg_topic: workflow, topic, id, and the unique
#   chrono_forge_msg_idempotency) and Workflow.parent_execution_log (chrono_forge_wf_parent_state:
#   parent_execution_log, state, id). PostgreSQL's check of a foreign key when a workflow is
#   deleted probes that leading column, so it keeps an index.
# * chrono_forge_log_id (the step logs' ids alone) where the primary key already is such an index:
#   PostgreSQL, and SQLite with UUID keys. SQLite with integer keys keeps it (see RowidTableIndex).
#
# Only the indexes are dropped: altering the fields through the schema editor would copy the
# whole table on SQLite (its ALTER TABLE cannot change an index, Django rebuilds the table), so the
# field changes are state only and the database side drops (or, backwards, creates) the indexes.

from django.db import migrations, models

import chrono_forge.indexes

FIELD_INDEXES = (
    ("ExecutionLog", "workflow"),
    ("Message", "workflow"),
    ("Workflow", "parent_execution_log"),
)
ID_INDEX = "chrono_forge_log_id"


def _indexes(schema_editor, model) -> dict:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, model._meta.db_table)


def _field_index_name(schema_editor, model, field) -> str:
    # The name Django gave the field's index (the same function, so the same hash).
    return schema_editor._create_index_name(model._meta.db_table, [field.column])


def drop(apps, schema_editor):
    for model_name, field_name in FIELD_INDEXES:
        model = apps.get_model("chrono_forge", model_name)
        name = _field_index_name(schema_editor, model, model._meta.get_field(field_name))
        if name in _indexes(schema_editor, model):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))
    log = apps.get_model("chrono_forge", "ExecutionLog")
    index = chrono_forge.indexes.RowidTableIndex(fields=["id"], name=ID_INDEX)
    if not index.wanted(log, schema_editor) and ID_INDEX in _indexes(schema_editor, log):
        schema_editor.execute(schema_editor._delete_index_sql(log, ID_INDEX))


def create(apps, schema_editor):
    for model_name, field_name in FIELD_INDEXES:
        model = apps.get_model("chrono_forge", model_name)
        field = model._meta.get_field(field_name)
        if _field_index_name(schema_editor, model, field) not in _indexes(schema_editor, model):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))
    log = apps.get_model("chrono_forge", "ExecutionLog")
    if ID_INDEX not in _indexes(schema_editor, log):
        schema_editor.add_index(log, models.Index(fields=["id"], name=ID_INDEX))


class Migration(migrations.Migration):
    dependencies = [
        ("chrono_forge", "0010_log_wait_workflow_and_id_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop, create, elidable=False)],
            state_operations=[
                migrations.RemoveIndex(model_name="executionlog", name=ID_INDEX),
                migrations.AlterField(
                    model_name="executionlog",
                    name="workflow",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="execution_logs",
                        to="chrono_forge.workflow",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="workflow",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="messages",
                        to="chrono_forge.workflow",
                    ),
                ),
                migrations.AlterField(
                    model_name="workflow",
                    name="parent_execution_log",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        help_text="The branch step that spawned this workflow.",
                        null=True,
                        on_delete=models.deletion.SET_NULL,
                        related_name="child_workflows",
                        to="chrono_forge.executionlog",
                    ),
                ),
                migrations.AddIndex(
                    model_name="executionlog",
                    index=chrono_forge.indexes.RowidTableIndex(fields=["id"], name=ID_INDEX),
                ),
            ],
        ),
    ]
