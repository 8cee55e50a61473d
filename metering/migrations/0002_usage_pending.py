from django.db import migrations, models

# Every inserted UsageRecord gets a UsagePending row in the same transaction. On PostgreSQL a
# statement-level trigger with a transition table (one INSERT ... SELECT per statement, cheap
# for bulk inserts); SQLite has only row-level triggers.
PG_TRIGGER = """
CREATE FUNCTION metering_usage_pending_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO metering_usagepending (record_id) SELECT id FROM new_records;
    RETURN NULL;
END $$;
CREATE TRIGGER metering_usage_pending_add AFTER INSERT ON metering_usagerecord
    REFERENCING NEW TABLE AS new_records
    FOR EACH STATEMENT EXECUTE FUNCTION metering_usage_pending_add();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS metering_usage_pending_add ON metering_usagerecord;
DROP FUNCTION IF EXISTS metering_usage_pending_add();
"""
SQLITE_TRIGGER = """
CREATE TRIGGER metering_usage_pending_add AFTER INSERT ON metering_usagerecord
BEGIN
    INSERT INTO metering_usagepending (record_id) VALUES (NEW.id);
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS metering_usage_pending_add;"


def add_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        # Records not folded yet under the old flag become pending.
        cursor.execute("INSERT INTO metering_usagepending (record_id) "
                       "SELECT id FROM metering_usagerecord WHERE NOT aggregated")
        if vendor == "postgresql":
            cursor.execute(PG_TRIGGER)
        elif vendor == "sqlite":
            cursor.execute(SQLITE_TRIGGER)
        else:
            raise NotImplementedError(f"no usage-pending trigger for {vendor}")


def drop_trigger(apps, schema_editor):
    sql = PG_DROP if schema_editor.connection.vendor == "postgresql" else SQLITE_DROP
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsagePending",
            fields=[
                ("record_id", models.BigIntegerField(primary_key=True, serialize=False)),
            ],
            options={
                "verbose_name_plural": "usage pending aggregation",
            },
        ),
        migrations.RunPython(add_trigger, drop_trigger),
        migrations.RemoveIndex(
            model_name="usagerecord",
            name="usage_not_aggregated",
        ),
        migrations.RemoveField(
            model_name="usagerecord",
            name="aggregated",
        ),
    ]
