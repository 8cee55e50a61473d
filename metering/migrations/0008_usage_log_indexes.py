"""Indexes for the request log's filters (/requests): a key's, a model's, an outcome's and a
status class's records, newest first. Built CONCURRENTLY on PostgreSQL (the table is the
largest and is written all the time: a plain CREATE INDEX would block those writes while it
runs), plainly elsewhere; so this migration runs outside a transaction."""

import django.db.models.expressions
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(
            self, app_label, schema_editor, from_state, to_state
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(
            self, app_label, schema_editor, from_state, to_state
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("metering", "0007_limit_counters_per_organization"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="usagerecord",
            index=models.Index(fields=["key", "-created_at"], name="usage_log_key"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="usagerecord",
            index=models.Index(fields=["org", "model", "-created_at"], name="usage_log_model"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="usagerecord",
            index=models.Index(fields=["org", "outcome", "-created_at"], name="usage_log_outcome"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="usagerecord",
            index=models.Index(
                models.F("org"),
                django.db.models.expressions.CombinedExpression(
                    models.F("http_status"), "/", models.Value(100)
                ),
                models.OrderBy(models.F("created_at"), descending=True),
                name="usage_log_status",
            ),
        ),
    ]
