"""Usage records: the request id is unique together with `created_at`, and on PostgreSQL the
table becomes range-partitioned by month on `created_at` (issue #20).

PostgreSQL requires the partition key in every unique index, so the table's primary key is
(id, created_at) and the idempotency key (request_id, created_at). Django still sees `id` as
the primary key: ids come from one sequence, so `id` alone stays unique in practice and
`.get(pk=)`, the admin and `UsagePending.record_id` work unchanged. Every writer uses the
admission's timestamp as `created_at` (metering/recording.py), so a replayed record lands in
the same partition and conflicts.

The existing rows move: the old table is renamed, a partitioned one takes its name (same
columns, indexes and trigger), a partition is made for every month from the oldest record to
three months ahead plus a default one, the rows are copied by INSERT ... SELECT and the old
table is dropped, all in the migration's transaction (the table is locked meanwhile: on a large
table, run it in a maintenance window; the copy runs at ~0.5-1M rows a minute per core).

SQLite (the embedded default) keeps a plain table with the same constraint.
"""

from datetime import UTC, datetime

from django.db import migrations, models

TABLE = "metering_usagerecord"
OLD = "metering_usagerecord_unpartitioned"
UNIQUE = "usage_request_once"
MONTHS_AHEAD = 3

PG_TRIGGER = f"""
CREATE TRIGGER metering_usage_pending_add AFTER INSERT ON {TABLE}
    REFERENCING NEW TABLE AS new_records
    FOR EACH STATEMENT EXECUTE FUNCTION metering_usage_pending_add();
"""
SQLITE_TRIGGER = f"""
CREATE TRIGGER IF NOT EXISTS metering_usage_pending_add AFTER INSERT ON {TABLE}
BEGIN
    INSERT INTO metering_usagepending (record_id) VALUES (NEW.id);
END;
"""


def _month(year: int, month: int) -> tuple[int, int]:
    return year + (month - 1) // 12, (month - 1) % 12 + 1


def _bound(year: int, month: int) -> str:
    return f"'{year:04d}-{month:02d}-01 00:00:00+00'"


def _index_defs(cursor, table: str) -> list[tuple[str, str]]:
    """The table's indexes other than its primary key and request-id uniqueness (name, SQL)."""
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = %s ORDER BY indexname",
        [table],
    )
    return [
        (name, sql.replace(" ON ONLY ", " ON "))
        for name, sql in cursor.fetchall()
        if name != f"{TABLE}_pkey" and "request_id" not in sql
    ]


def _detach_names(cursor, table: str, indexes: list[tuple[str, str]]) -> None:
    """Free the names the new table takes: the old table's indexes, key and sequence."""
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    cursor.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
        [table],
    )
    for (name,) in cursor.fetchall():
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    cursor.execute(f"DROP TRIGGER IF EXISTS metering_usage_pending_add ON {table}")


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        _sqlite_forwards(apps, schema_editor)
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        indexes = _index_defs(cursor, TABLE)
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
        _detach_names(cursor, OLD, indexes)
        # The old identity column's sequence would hold the new sequence's name.
        cursor.execute(f"ALTER TABLE {OLD} ALTER COLUMN id DROP IDENTITY IF EXISTS")
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
            "PARTITION BY RANGE (created_at)"
        )
        # Identity columns on partitioned tables need PostgreSQL 17: a sequence it owns.
        cursor.execute(f"CREATE SEQUENCE {TABLE}_id_seq AS bigint OWNED BY {TABLE}.id")
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{TABLE}_id_seq')")
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, created_at)")
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {UNIQUE} UNIQUE (request_id, created_at)")
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
        cursor.execute(f"SELECT min(created_at) FROM {OLD}")
        (oldest,) = cursor.fetchone()
        now = datetime.now(UTC)
        start = min(oldest.astimezone(UTC), now) if oldest else now
        year, month = start.year, start.month
        last = _month(now.year, now.month + MONTHS_AHEAD)
        while (year, month) <= last:
            upper = _month(year, month + 1)
            cursor.execute(
                f"CREATE TABLE {TABLE}_p{year:04d}_{month:02d} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ({_bound(year, month)}) TO ({_bound(*upper)})"
            )
            year, month = upper
        # Before the indexes and the trigger: a bulk copy, and its records are pending already
        # (or folded) under their unchanged ids.
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
        cursor.execute(
            f"SELECT setval('{TABLE}_id_seq', coalesce((SELECT max(id) FROM {OLD}), 0) + 1, false)"
        )
        for _, sql in indexes:
            cursor.execute(sql)
        cursor.execute(PG_TRIGGER)
        cursor.execute(f"DROP TABLE {OLD}")


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        _sqlite_backwards(apps, schema_editor)
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        indexes = _index_defs(cursor, TABLE)
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
        _detach_names(cursor, OLD, indexes)
        cursor.execute(f"ALTER SEQUENCE {TABLE}_id_seq RENAME TO {OLD}_id_seq")
        cursor.execute(f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING CONSTRAINTS)")
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), "
            f"coalesce((SELECT max(id) FROM {OLD}), 0) + 1, false)"
        )
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)")
        cursor.execute(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_request_id_key UNIQUE (request_id)"
        )
        cursor.execute(
            f"CREATE INDEX {TABLE}_request_id_1c7d64cd_like ON {TABLE} "
            "(request_id varchar_pattern_ops)"
        )
        for _, sql in indexes:
            cursor.execute(sql)
        cursor.execute(PG_TRIGGER)
        cursor.execute(f"DROP TABLE {OLD} CASCADE")


def _request_id_fields(apps):
    model = apps.get_model("metering", "UsageRecord")
    unique = models.CharField(max_length=64, unique=True)
    plain = models.CharField(max_length=64)
    for field in (unique, plain):
        field.set_attributes_from_name("request_id")
        field.model = model
    return model, unique, plain


def _sqlite_forwards(apps, schema_editor):
    # `apps` is the new state (request_id plain, the constraint declared): SQLite rebuilds the
    # table from it once, and its triggers go with the old table.
    model, unique, plain = _request_id_fields(apps)
    schema_editor.alter_field(model, unique, plain)
    schema_editor.execute(SQLITE_TRIGGER)


def _sqlite_backwards(apps, schema_editor):
    # The request id alone becomes unique again; the (request_id, created_at) constraint stays
    # in the rebuilt table (SQLite cannot drop it without another rebuild, and it is implied).
    model, unique, plain = _request_id_fields(apps)
    schema_editor.alter_field(model, plain, unique)
    schema_editor.execute(SQLITE_TRIGGER)


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0007_limit_counters_per_organization"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usagerecord",
                    name="request_id",
                    field=models.CharField(max_length=64),
                ),
                migrations.AddConstraint(
                    model_name="usagerecord",
                    constraint=models.UniqueConstraint(
                        fields=("request_id", "created_at"), name=UNIQUE
                    ),
                ),
            ],
            database_operations=[],
        ),
        # After the state change, so that SQLite's table rebuild sees the new model.
        migrations.RunPython(partition, unpartition),
    ]
