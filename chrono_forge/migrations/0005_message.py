# Messages sent to a run (send/receive). The primary key follows CHRONO_FORGE["PRIMARY_KEY_FIELD"]
# or DEFAULT_AUTO_FIELD (see chrono_forge.conf.primary_key_field), as in 0001.

import django.db.models.deletion
from django.db import migrations, models

from chrono_forge.conf import primary_key_field


class Migration(migrations.Migration):
    dependencies = [
        ("chrono_forge", "0004_workflow_result"),
    ]

    operations = [
        migrations.CreateModel(
            name="Message",
            fields=[
                ("id", primary_key_field()),
                ("topic", models.CharField(max_length=255)),
                ("payload", models.JSONField(blank=True, null=True)),
                (
                    "idempotency_key",
                    models.CharField(
                        blank=True,
                        help_text="Unique per workflow: a second send with the same key returns "
                        "this message.",
                        max_length=255,
                        null=True,
                    ),
                ),
                ("created", models.DateTimeField()),
                (
                    "consumed_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When a receive consumed it (None: pending).",
                        null=True,
                    ),
                ),
                (
                    "consumed_by",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        help_text="The receive step that consumed this message.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="consumed_messages",
                        to="chrono_forge.executionlog",
                    ),
                ),
                (
                    "workflow",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="chrono_forge.workflow",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["workflow", "topic", "id"], name="chrono_forge_msg_topic")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("workflow", "idempotency_key"), name="chrono_forge_msg_idempotency"
                    )
                ],
            },
        ),
    ]
