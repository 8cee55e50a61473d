"""A usage record that the database cannot take is spooled, then drained, never lost."""

from __future__ import annotations

import pytest
from django.db import connection

from metering.models import UsageRecord
from metering.recording import Usage, usage_record_write, usage_spool_drain


def _usage(key, rid):
    return Usage(
        request_id=rid,
        user_id=key.owner_id,
        key_id=key.pk,
        endpoint="completions",
        prompt_tokens=3,
        completion_tokens=4,
    )


@pytest.mark.django_db(transaction=True)
def test_record_is_spooled_while_postgres_is_unreachable_then_drained(
    alice_key, settings, tmp_path
):
    if connection.vendor != "postgresql":
        pytest.skip("kills its own PostgreSQL backend connection")
    settings.USAGE_SPOOL_DIR = tmp_path
    key, _ = alice_key
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    import psycopg

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"],
        dbname=db["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # The connection this process holds is dead: the write fails for real and is spooled.
    assert usage_record_write(_usage(key, "req_spooled")) is True
    connection.close()
    assert not UsageRecord.objects.filter(request_id="req_spooled").exists()
    assert usage_spool_drain() == 1
    assert usage_spool_drain() == 0
    record = UsageRecord.objects.get(request_id="req_spooled")
    assert record.total_tokens == 7


@pytest.mark.django_db
def test_file_spool_drains_idempotently(alice_key, settings, tmp_path, monkeypatch):
    """Without Redis (or with it down) the spool is a local file; draining twice, or a record
    already in the table, never doubles it."""
    from metering import recording

    settings.USAGE_SPOOL_DIR = tmp_path
    monkeypatch.setattr("metering.recording.get_redis", lambda: None)
    key, _ = alice_key
    recording._spool(_usage(key, "req_a"))
    recording._spool(_usage(key, "req_b"))
    usage_record_write(_usage(key, "req_b"))  # it made it to the table meanwhile
    assert usage_spool_drain() == 1  # req_a; req_b was already recorded
    assert usage_spool_drain() == 0
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_a", "req_b"]
    assert not list(tmp_path.iterdir())
