from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chrono_forge", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflow",
            name="parked_on",
            field=models.CharField(
                blank=True,
                help_text="The step (a continue_if) the run is parked on with nothing scheduled, "
                "waiting for an event (None: not parked).",
                max_length=255,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="workflow",
            name="parked_since",
            field=models.DateTimeField(
                blank=True, help_text="Since when the run is parked on ``parked_on``.", null=True
            ),
        ),
    ]
