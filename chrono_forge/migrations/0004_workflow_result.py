from django.db import migrations, models


class Migration(migrations.Migration):
    """The value ``perform()`` returned, and ``id`` appended to the children index so that
    ``branch_results`` reads a branch's children in primary-key order as one index range."""

    dependencies = [
        ("chrono_forge", "0003_scale_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="workflow", name="chrono_forge_wf_parent_state"),
        migrations.AddField(
            model_name="workflow",
            name="result",
            field=models.JSONField(
                blank=True,
                help_text="The value perform() returned, stored with the completion (None until "
                "the run completes). Read it with Cls.result(key), which refuses an unfinished "
                "run.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="workflow",
            index=models.Index(
                fields=["parent_execution_log", "state", "id"],
                name="chrono_forge_wf_parent_state",
            ),
        ),
    ]
