"""Usage records partitioned by month (PostgreSQL): a replayed record still conflicts whoever
writes it, months are made ahead, records of a month without a partition wait in the default
one and move in when it is made, and retention drops whole months instead of deleting rows.
The idempotency tests run on SQLite too (its plain table has the same unique key)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.models import DailyUsage, UsagePending, UsageRecord
from metering.partitions import (
    Month,
    is_partitioned,
    usage_partitions,
    usage_partitions_drop,
    usage_partitions_ensure,
)
from metering.recording import (
    Usage,
    journal_entry,
    records_insert,
    usage_record_write,
    usage_spool_drain,
)
from metering.services import usage_aggregate, usage_prune
from tests.builders import usage_records

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="partitioning is PostgreSQL's"
)


def _usage(key, **fields) -> Usage:
    return Usage(
        request_id=uuid.uuid4().hex,
        user_id=key.owner_id,
        key_id=key.pk,
        org_id=key.org_id,
        endpoint="chat.completions",
        model="m",
        prompt_tokens=3,
        completion_tokens=4,
        **fields,
    )


def _partition_of(record_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM metering_usagerecord WHERE id = %s", [record_id]
        )
        return cursor.fetchone()[0]


# --- one record per request, whichever writers write it ----------------------------------------


@pytest.mark.django_db
def test_the_journal_keeps_the_admissions_timestamp_to_the_microsecond(alice_key):
    usage = _usage(alice_key[0], created_at=datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=UTC))
    line = json.loads(journal_entry(usage, prompt_tokens=3))
    replayed = records_insert(
        [{**line, "created_at": _parse(line["created_at"])}], source="journal", journal=True
    )
    assert replayed == 1
    assert UsageRecord.objects.get(request_id=usage.request_id).created_at == usage.created_at


def _parse(text: str) -> datetime:
    from django.utils.dateparse import parse_datetime

    parsed = parse_datetime(text)
    assert parsed is not None
    return parsed


@pytest.mark.django_db
def test_the_same_record_from_every_writer_is_one_row(alice_key, settings, tmp_path):
    """Direct write, batch insert, spool drain and journal replay of one request: one row."""
    settings.USAGE_SPOOL_DIR = tmp_path
    usage = _usage(alice_key[0])
    assert usage_record_write(usage) is True  # the direct writer (in the request)
    assert usage_record_write(usage) is False  # again: the row is there
    assert records_insert([usage.row()], source="writer") == 0  # the batch writer
    (tmp_path / "1.jsonl").write_text(json.dumps(usage.row(), default=str) + "\n")
    assert usage_spool_drain() == 0  # the spool
    line = json.loads(journal_entry(usage, prompt_tokens=3))
    line["created_at"] = _parse(line["created_at"])
    assert records_insert([line], source="journal", journal=True) == 0  # the journal
    assert UsageRecord.objects.filter(request_id=usage.request_id).count() == 1
    assert UsagePending.objects.count() == 1


@pytest.mark.django_db
def test_the_unique_key_itself_refuses_a_replay_that_skips_the_writers_check(alice_key):
    """Two writers racing both pass the existence check: the (request_id, created_at) key, in
    the record's own partition, is what keeps the second out."""
    usage = _usage(alice_key[0])
    UsageRecord.objects.create(**usage.row())
    UsageRecord.objects.bulk_create([UsageRecord(**usage.row())], ignore_conflicts=True)
    assert UsageRecord.objects.filter(request_id=usage.request_id).count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageRecord.objects.create(**usage.row())


@pytest.mark.django_db
def test_a_copy_stamped_differently_is_not_written_again(alice_key):
    """The unique key alone would take a copy of a record whose timestamp differs: the batch's
    look-up by request id, within a day of its timestamps, keeps it out."""
    usage, fresh = _usage(alice_key[0]), _usage(alice_key[0])
    assert records_insert([usage.row()], source="writer") == 1
    copy = {**usage.row(), "created_at": usage.created_at + timedelta(hours=2)}
    assert records_insert([copy, fresh.row()], source="writer") == 1
    assert UsageRecord.objects.filter(request_id=usage.request_id).count() == 1
    assert UsageRecord.objects.filter(request_id=fresh.request_id).count() == 1


@postgres_only
@pytest.mark.django_db
def test_a_line_of_an_earlier_release_takes_the_defaults_of_the_fields_it_lacks(alice_key):
    """Spool and journal lines written before a field existed lack it: the batch statement
    gives it the field's default (not a null its column refuses), so the batch goes in whole."""
    usage = _usage(alice_key[0])
    row = usage.row()
    for name in ("streamed", "estimated", "admitted", "end_user", "org_id"):
        del row[name]
    with CaptureQueriesContext(connection) as ctx:
        assert records_insert([row], source="spool") == 1
    inserts = [q for q in ctx.captured_queries if "INSERT INTO" in q["sql"]]
    assert len(inserts) == 1
    record = UsageRecord.objects.get(request_id=usage.request_id)
    assert (record.streamed, record.estimated, record.admitted) == (False, False, False)
    assert record.end_user is None and record.org_id is None


@pytest.mark.django_db
def test_records_are_found_by_primary_key_as_before(alice, alice_key):
    (record,) = usage_records(alice, alice_key[0], n=1)
    assert UsageRecord.objects.get(pk=record.pk).request_id == record.request_id


# --- partitions ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sqlite_keeps_a_plain_table():
    if connection.vendor == "postgresql":
        assert is_partitioned()
    else:
        assert not is_partitioned()
        assert usage_partitions() == []
        assert usage_partitions_ensure() == []


@postgres_only
@pytest.mark.django_db
def test_this_month_and_three_ahead_exist_and_take_their_records(alice, alice_key):
    now = timezone.now()
    current = Month.of(now)
    assert {current.plus(n) for n in range(4)} <= set(usage_partitions())
    assert usage_partitions_ensure() == []  # made at migrate time already
    (record,) = usage_records(alice, alice_key[0], n=1, at=now)
    assert _partition_of(record.pk) == current.name


@postgres_only
@pytest.mark.django_db
def test_a_month_without_partition_waits_in_the_default_then_moves_in(alice, alice_key):
    month = Month.of(timezone.now()).plus(-9)
    at = month.start + timedelta(days=3)
    records = usage_records(alice, alice_key[0], n=3, at=at)
    assert {_partition_of(r.pk) for r in records} == {"metering_usagerecord_default"}

    created = usage_partitions_ensure(now=at, months_ahead=0)

    assert created == [month.name]
    assert {_partition_of(r.pk) for r in records} == {month.name}
    assert UsageRecord.objects.filter(pk__in=[r.pk for r in records]).count() == 3
    assert UsagePending.objects.count() == 3  # still waiting for aggregation, same ids
    assert usage_aggregate() == 3


@postgres_only
@pytest.mark.django_db
def test_retention_drops_whole_months_and_keeps_the_ledgers(alice, alice_key):
    key = alice_key[0]
    old = Month.of(timezone.now()).plus(-6)
    usage_partitions_ensure(now=old.start, months_ahead=1)
    usage_records(alice, key, n=5, at=old.start + timedelta(days=1), prompt=2, completion=3)
    usage_records(alice, key, n=2, at=timezone.now(), prompt=2, completion=3)
    usage_aggregate()
    ledgers = list(DailyUsage.objects.order_by("day").values_list("day", "requests"))

    with CaptureQueriesContext(connection) as ctx:
        usage_prune(older_than_days=90)

    assert old not in usage_partitions()
    assert old.plus(1) not in usage_partitions()  # also entirely older than 90 days
    assert any(q["sql"].startswith(f"DROP TABLE {old.name}") for q in ctx.captured_queries)
    assert UsageRecord.objects.count() == 2
    assert list(DailyUsage.objects.order_by("day").values_list("day", "requests")) == ledgers


@postgres_only
@pytest.mark.django_db
def test_a_month_partly_inside_the_retention_is_kept_whole():
    now = datetime(2026, 5, 20, tzinfo=UTC)
    usage_partitions_ensure(now=datetime(2026, 1, 1, tzinfo=UTC), months_ahead=5)
    # 90 days before 20 May is 19 February: January goes, February stays until March.
    dropped = usage_partitions_drop(before=now - timedelta(days=90))
    assert [d.name for d in dropped] == ["metering_usagerecord_p2026_01"]
    assert Month(2026, 2) in usage_partitions()


@postgres_only
@pytest.mark.django_db
def test_a_month_with_records_not_aggregated_is_kept(alice, alice_key):
    old = Month.of(timezone.now()).plus(-6)
    usage_partitions_ensure(now=old.start, months_ahead=0)
    usage_records(alice, alice_key[0], n=2, at=old.start + timedelta(days=1))
    assert usage_prune(older_than_days=90) == 0
    assert old in usage_partitions()
    usage_aggregate()
    usage_prune(older_than_days=90)
    assert old not in usage_partitions()
    assert not UsageRecord.objects.exists()


@postgres_only
@pytest.mark.django_db
def test_the_beat_task_and_the_command_make_months_ahead(capsys):
    from django.core.management import call_command

    from metering.tasks import usage_partitions as task

    assert task() == 0
    call_command("usage_partitions", "--months-ahead", "5")
    out = capsys.readouterr().out
    assert f"created {Month.of(timezone.now()).plus(5).name}" in out


@postgres_only
@pytest.mark.django_db
def test_a_batch_holding_a_record_already_written_writes_the_others(alice_key):
    """The batch insert itself (INSERT ... ON CONFLICT DO NOTHING on PostgreSQL) skips a
    replayed record: another writer may have written it after the existence check."""
    from metering import recording

    there, new, later = (_usage(alice_key[0]) for _ in range(3))
    UsageRecord.objects.create(**there.row())
    with CaptureQueriesContext(connection) as ctx:
        assert recording._insert_many([there.row(), new.row()]) == {new.request_id}
        assert recording._insert_many([later.row()]) == {later.request_id}
    rows = UsageRecord.objects.filter(
        request_id__in=[there.request_id, new.request_id, later.request_id]
    )
    assert sorted(rows.values_list("request_id", flat=True)) == sorted(
        [there.request_id, new.request_id, later.request_id]
    )
    assert rows.count() == 3
    assert any("ON CONFLICT DO NOTHING" in q["sql"] for q in ctx.captured_queries)
