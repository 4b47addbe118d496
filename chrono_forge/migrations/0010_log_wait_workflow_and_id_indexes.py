# The pending-wait index also holds the workflow: the wait filters and the Waiting page read the
# workflows of the pending waits from the index alone. The operator class of the workflow column
# follows the primary keys (see chrono_forge.conf.key_opclass). An index of the step logs' ids
# alone: a deep page of the Steps list walks it instead of SQLite's table. Building them on a
# table of millions of step logs takes a while (one pass over the table each).

from django.db import migrations, models

from chrono_forge.conf import key_opclass


class Migration(migrations.Migration):
    dependencies = [
        ("chrono_forge", "0009_log_kind_and_time_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="executionlog",
            name="chrono_forge_log_state_step",
        ),
        migrations.AddIndex(
            model_name="executionlog",
            index=models.Index(
                fields=["state", "step_name", "workflow"],
                name="chrono_forge_log_state_step",
                opclasses=["varchar_pattern_ops", "varchar_pattern_ops", key_opclass()],
            ),
        ),
        migrations.AddIndex(
            model_name="executionlog",
            index=models.Index(fields=["id"], name="chrono_forge_log_id"),
        ),
    ]
