"""A usage record that the database cannot take is spooled, then drained, never lost."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection

from metering.models import QuarantinedUsage, UsageRecord
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis spool")
def test_spooled_records_out_of_range_are_quarantined_as_the_spools(alice_key):
    """The operator reads where a quarantined record came from: a drained one says spool,
    whether it waited in the spool or in the claim of a drain that died."""
    from core.redis import get_redis
    from metering import recording
    from metering.limits import keys

    key, _ = alice_key
    client = get_redis()
    for rid in ("req_claimed_bad", "req_spooled_bad"):
        bad = _usage(key, rid)
        bad.completion_tokens = -4
        client.rpush(keys.spool(), json.dumps(bad.row(), default=str))
    # A drain claimed the first long ago, then died.
    claim = client.register_script(recording.CLAIM_LUA)
    claim(keys=[keys.spool(), keys.spool_claim("dead-drain"), keys.spool_claims()], args=[1, 1])
    assert usage_spool_drain() == 0
    assert set(QuarantinedUsage.objects.values_list("request_id", "source")) == {
        ("req_claimed_bad", "spool"),
        ("req_spooled_bad", "spool"),
    }
