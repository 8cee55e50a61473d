"""Indexes for the request log's filters (/requests): a key's, a model's, an outcome's and a
status class's records, newest first.

On a plain PostgreSQL table they are built CONCURRENTLY (the table is the largest and is
written all the time: a plain CREATE INDEX would block those writes while it runs), so this
migration runs outside a transaction. PostgreSQL cannot build an index CONCURRENTLY on a
partitioned table (0008 partitions it by month): there each is one CREATE INDEX on the parent,
which builds it on every partition (and on the months made later) and holds writes back while
it runs: apply it in the maintenance window 0008 already asks for. SQLite: plain indexes."""

import django.db.models.expressions
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def _concurrently(schema_editor) -> bool:
    """PostgreSQL, and the records table is not partitioned (relkind 'p')."""
    if schema_editor.connection.vendor != "postgresql":
        return False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'metering_usagerecord'::regclass")
        (kind,) = cursor.fetchone()
    return kind != "p"


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _concurrently(schema_editor):
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(
            self, app_label, schema_editor, from_state, to_state
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if _concurrently(schema_editor):
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(
            self, app_label, schema_editor, from_state, to_state
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("metering", "0008_usage_partitioned_by_month"),
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
