"""metering 0008 on a table holding records: every row moves into its month's partition under
its id, records waiting for aggregation still wait, new records continue the ids and are still
marked pending by the trigger, and going back gives the plain table with the same rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from metering.partitions import usage_partitions
from tests.builders import usage_record

BEFORE = [("metering", "0007_limit_counters_per_organization")]
MONTHS = [datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 28, 23, 59, tzinfo=UTC)]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _rows():
    """(id, request_id, created_at, the table holding it) of every record."""
    where = (
        "tableoid::regclass::text"
        if connection.vendor == "postgresql"
        else "'metering_usagerecord'"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, request_id, created_at, {where} FROM metering_usagerecord ORDER BY id"
        )
        return [(id_, rid, _utc(at), table) for id_, rid, at, table in cursor.fetchall()]


def _utc(value):
    if isinstance(value, str):  # SQLite
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _pending():
    with connection.cursor() as cursor:
        cursor.execute("SELECT record_id FROM metering_usagepending ORDER BY 1")
        return [row[0] for row in cursor.fetchall()]


def back_to_latest(months_before: list) -> None:
    """Migrate forward again and leave the database as the tests after this one expect it (in
    this process, in whatever order pytest-xdist runs modules): the month partitions made
    for the old records dropped (a prune test finds only the months migrate made), and a new
    connection (the usage writer's staging table, a temp table of the old one, lost its id
    default when the migration dropped the sequence, CASCADE)."""
    _migrate(_latest())
    with connection.cursor() as cursor:
        for month in sorted(set(usage_partitions()) - set(months_before)):
            cursor.execute(f"DROP TABLE {month.name}")
    connection.close()


@pytest.fixture
def old_schema():
    months = usage_partitions()
    apps = _migrate(BEFORE)
    yield apps
    back_to_latest(months)


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_existing_records(old_schema, alice, alice_key):
    UsageRecord = old_schema.get_model("metering", "UsageRecord")
    key = alice_key[0]
    for at in MONTHS:
        for _ in range(3):
            UsageRecord.objects.create(
                request_id=uuid.uuid4().hex,
                user_id=alice.pk,
                key_id=key.pk,
                org_id=key.org_id,
                endpoint="chat.completions",
                outcome="ok",
                http_status=200,
                created_at=at,
            )
    with connection.cursor() as cursor:  # the first month was aggregated already
        cursor.execute(
            "DELETE FROM metering_usagepending WHERE record_id IN "
            "(SELECT id FROM metering_usagerecord WHERE created_at < '2026-02-01')"
        )
    before = _rows()
    pending = _pending()
    assert len(before) == 6 and len(pending) == 3

    _migrate(_latest())

    after = _rows()
    assert [row[:3] for row in after] == [row[:3] for row in before]
    if connection.vendor == "postgresql":
        assert [row[3] for row in after] == ["metering_usagerecord_p2026_01"] * 3 + [
            "metering_usagerecord_p2026_02"
        ] * 3
    assert _pending() == pending
    new = usage_record(alice, key)
    assert new.pk > max(row[0] for row in before)
    assert _pending() == [*pending, new.pk]  # the trigger came along

    _migrate(BEFORE)  # and back: the plain table, the same rows
    assert [row[:3] for row in _rows()] == [row[:3] for row in after] + [
        (new.pk, new.request_id, new.created_at)
    ]
    assert {row[3] for row in _rows()} == {"metering_usagerecord"}
