"""The metered request's lifecycle (metering.lifecycle): the record is written before the
admission is settled, a real record always wins over one written from the admission journal,
a record the database refuses is quarantined without holding up the others, and requests
refused before admission are recorded through the writer, under a per-key rate."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.conf import settings
from django.db.models.signals import post_save

from core import metrics
from metering.lifecycle import MeteredRequest
from metering.limits import limits_status
from metering.models import DailyUsage, QuarantinedUsage, UsageRecord
from metering.recording import (
    DirectWriter,
    Usage,
    UsageWriter,
    records_insert,
    usage_journal_reconcile,
)
from metering.services import usage_aggregate

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="the journal lives in Redis")


@pytest.fixture
def principal_and_plan(alice_key, plan):
    from apikeys.services import apikey_authenticate
    from catalog.routing import routing_table

    _, raw = alice_key
    principal = apikey_authenticate(raw_key=raw)
    return principal, routing_table().plan_for(principal.plan_id)


def _usage(principal, rid: str, **values) -> Usage:
    return Usage(
        request_id=rid,
        user_id=principal.owner_id,
        key_id=principal.key_id,
        endpoint="chat.completions",
        model="m",
        **values,
    )


def _admit(principal, plan, usage: Usage, *, lease_seconds: int = 900) -> MeteredRequest:
    from metering.limits import limits_admit
    from metering.recording import journal_entry

    admission = limits_admit(
        principal=principal,
        plan=plan,
        reserve_tokens=50,
        request_id=usage.request_id,
        journal=journal_entry(usage, prompt_tokens=5),
        lease_seconds=lease_seconds,
    )
    usage.admitted = True
    return MeteredRequest(usage=usage, admission=admission)


def _journal_has(member_prefix: str) -> bool:
    from core.redis import get_redis
    from metering.limits import keys

    client = get_redis()
    members = [
        member
        for org in client.zrange(keys.journal_index(), 0, -1)
        for member in client.hkeys(keys.journal(org.decode()))
    ]
    return any(m.decode().startswith(member_prefix) for m in members)


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_the_direct_writer_writes_the_record_before_it_settles(principal_and_plan):
    """Settling deletes the journal entry, the record's only other copy: when the record goes
    into the table, the entry must still be there."""
    principal, plan = principal_and_plan
    usage = _usage(principal, "req_order", prompt_tokens=5, completion_tokens=7)
    metered = _admit(principal, plan, usage)
    seen = []

    def observe(sender, instance, created, **kwargs):
        seen.append((instance.request_id, _journal_has("req_order:")))

    post_save.connect(observe, sender=UsageRecord)
    try:
        DirectWriter().submit(metered.usage, metered.admission)
    finally:
        post_save.disconnect(observe, sender=UsageRecord)
    assert seen == [("req_order", True)]
    assert not _journal_has("req_order:")  # settled after
    assert UsageRecord.objects.get(request_id="req_order").admitted is True


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_a_released_slot_is_free_before_the_batch_settles(principal_and_plan):
    principal, plan = principal_and_plan
    writer = UsageWriter()
    metered = _admit(principal, plan, _usage(principal, "req_release", completion_tokens=3))
    assert limits_status(principal=principal, plan=plan)["max_concurrent_requests"]["used"] == 1
    metered.release()
    assert limits_status(principal=principal, plan=plan)["max_concurrent_requests"]["used"] == 0
    assert _journal_has("req_release:")  # still recoverable until the record is in
    writer.submit(metered.usage, metered.admission)
    writer.flush()
    assert UsageRecord.objects.filter(request_id="req_release").exists()
    assert not _journal_has("req_release:")


def _wait_for_journal_record(rid: str) -> UsageRecord:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        usage_journal_reconcile()
        record = UsageRecord.objects.filter(request_id=rid).first()
        if record is not None:
            return record
        time.sleep(0.1)
    raise AssertionError(f"the journal never wrote {rid}")


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_the_real_record_replaces_a_journal_record_written_before_it(principal_and_plan):
    principal, plan = principal_and_plan
    usage = _usage(principal, "req_late", prompt_tokens=5, completion_tokens=400)
    metered = _admit(principal, plan, usage, lease_seconds=1)
    # The request outlives its lease (its process looked dead): the journal writes a stand-in.
    stand_in = _wait_for_journal_record("req_late")
    assert (stand_in.error_code, stand_in.total_tokens) == ("request_lost", 5)
    usage_aggregate()  # and it is folded into the ledger already
    assert DailyUsage.objects.get().total_tokens == 5

    metered.finish()  # the request did end after all (direct writer in tests)
    record = UsageRecord.objects.get(request_id="req_late")
    assert (record.outcome, record.error_code, record.total_tokens) == ("ok", "", 405)
    usage_aggregate()
    ledger = DailyUsage.objects.get()
    assert (ledger.requests, ledger.errors, ledger.total_tokens) == (1, 0, 405)


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_the_batch_writer_also_replaces_a_journal_record(principal_and_plan):
    principal, plan = principal_and_plan
    usage = _usage(principal, "req_late_batch", prompt_tokens=5, completion_tokens=40)
    metered = _admit(principal, plan, usage, lease_seconds=1)
    _wait_for_journal_record("req_late_batch")
    writer = UsageWriter()
    writer.submit(metered.usage, metered.admission)
    writer.flush()
    record = UsageRecord.objects.get(request_id="req_late_batch")
    assert (record.error_code, record.total_tokens) == ("", 45)
    usage_aggregate()
    assert DailyUsage.objects.get().total_tokens == 45


@pytest.mark.django_db(transaction=True)
def test_a_journal_record_never_replaces_a_real_one(alice_key):
    key, _ = alice_key
    real = Usage(request_id="req_real", user_id=key.owner_id, key_id=key.pk, endpoint="completions")
    real.completion_tokens = 9
    records_insert([real.row()], source="writer")
    lost = {**real.row(), "error_code": "request_lost", "completion_tokens": 0, "total_tokens": 0}
    assert records_insert([lost], source="journal", journal=True) == 0
    assert UsageRecord.objects.get().completion_tokens == 9


@pytest.mark.django_db(transaction=True)
def test_a_refused_record_is_quarantined_and_the_rest_of_its_batch_written(alice_key):
    key, _ = alice_key
    before = metrics.USAGE_QUARANTINED._value.get()

    def row(rid, **values):
        usage = Usage(request_id=rid, user_id=key.owner_id, key_id=key.pk, endpoint="chat")
        for name, value in values.items():
            setattr(usage, name, value)
        return usage.row()

    rows = [
        row("req_fine_1", completion_tokens=3),
        row("req_huge", completion_tokens=2**40),  # 64-bit columns take it
        row("req_overflow", completion_tokens=2**64),  # no column takes it
        row("req_negative", prompt_tokens=-1),
        row("req_fine_2", completion_tokens=4),
    ]
    assert records_insert(rows, source="writer") == 3
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {
        "req_fine_1",
        "req_huge",
        "req_fine_2",
    }
    assert UsageRecord.objects.get(request_id="req_huge").total_tokens == 2**40
    quarantined = {q.request_id: q for q in QuarantinedUsage.objects.all()}
    assert set(quarantined) == {"req_overflow", "req_negative"}
    assert json.loads(quarantined["req_overflow"].raw)["completion_tokens"] == 2**64
    assert "completion_tokens" in quarantined["req_overflow"].error
    assert metrics.USAGE_QUARANTINED._value.get() - before == 2


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_itself_refuses_is_found_and_quarantined(alice_key):
    """A value only the database knows is wrong (here a model name longer than its column on
    PostgreSQL) fails the batch statement: the writer goes row by row and keeps the others."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite does not enforce column lengths")
    key, _ = alice_key
    rows = [
        Usage(request_id=f"req_{i}", user_id=key.owner_id, key_id=key.pk, endpoint="chat").row()
        for i in range(5)
    ]
    rows[2]["model"] = "m" * 500
    assert records_insert(rows, source="writer") == 4
    assert UsageRecord.objects.count() == 4
    assert QuarantinedUsage.objects.get().request_id == "req_2"


@pytest.mark.django_db
def test_quarantined_records_are_read_only_in_the_admin(client, staff):
    QuarantinedUsage.objects.create(request_id="req_bad", raw="{}", error="boom", source="writer")
    client.force_login(staff)
    response = client.get("/admin/metering/quarantinedusage/")
    assert response.status_code == 200 and b"req_bad" in response.content
    assert client.get("/admin/metering/quarantinedusage/add/").status_code == 403


def _chat(client, raw, model):
    return client.post(
        "/v1/chat/completions",
        json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


@pytest.mark.django_db
def test_a_refused_request_records_no_model_the_client_made_up(client, catalog, alice_key):
    _, raw = alice_key
    response = _chat(client, raw, "made-up/" + "x" * 100)
    assert response.status_code == 404
    record = UsageRecord.objects.get()
    assert (record.model, record.outcome, record.admitted) == ("", "client_error", False)


@pytest.mark.django_db
def test_refused_requests_past_the_per_key_rate_get_429_and_no_record(
    client, catalog, make_key, alice, settings
):
    settings.USAGE_REFUSED_PER_MINUTE = 3
    _, raw = make_key(alice, "refused-rate")
    # The counter is per UTC minute: start well inside one.
    while time.time() % 60 > 50:
        time.sleep(0.5)
    statuses = [_chat(client, raw, "no/such-model").status_code for _ in range(6)]
    assert statuses == [404, 404, 404, 429, 429, 429]
    assert UsageRecord.objects.count() == 3
    refused = _chat(client, raw, "no/such-model")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused["Retry-After"] == "60"


class MinuteClock:
    """metering.lifecycle's `time`, stepped by hand: the refused-request counter is per UTC
    minute, and a test that waited for the next one would take up to a minute."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.mark.django_db
def test_the_refused_request_counter_starts_again_each_utc_minute(
    client, catalog, make_key, alice, settings, monkeypatch
):
    from metering import lifecycle

    settings.USAGE_REFUSED_PER_MINUTE = 1
    minute = 1_767_225_600  # 2026-01-01T00:00:00Z
    clock = MinuteClock(minute + 1.0)
    monkeypatch.setattr(lifecycle, "time", clock)
    _, raw = make_key(alice, "refused-minutes")
    assert _chat(client, raw, "no/such-model").status_code == 404
    clock.now = minute + 59.0  # the same minute
    assert _chat(client, raw, "no/such-model").status_code == 429
    clock.now = minute + 61.0  # the next one
    assert _chat(client, raw, "no/such-model").status_code == 404
    assert UsageRecord.objects.count() == 2


@pytest.mark.django_db
def test_the_refused_request_rate_is_per_key(client, catalog, make_key, alice, bob, settings):
    settings.USAGE_REFUSED_PER_MINUTE = 2
    _, first = make_key(alice, "refused-first")
    _, second = make_key(alice, "refused-second")
    _, bobs = make_key(bob, "refused-bob")
    while time.time() % 60 > 50:  # the counter is per UTC minute: start well inside one
        time.sleep(0.5)
    assert [_chat(client, first, "no/such-model").status_code for _ in range(3)] == [
        404,
        404,
        429,
    ]
    # Another key of the same owner, and another owner's key, have their own counters.
    assert _chat(client, second, "no/such-model").status_code == 404
    assert _chat(client, bobs, "no/such-model").status_code == 404
    assert UsageRecord.objects.count() == 4


@pytest.mark.django_db
def test_refused_requests_are_recorded_while_the_limits_are_down(
    client, catalog, alice_key, settings, monkeypatch, caplog
):
    from metering import limits
    from metering.limits.redis_backend import RedisBackend
    from tests.test_limits_support import unreachable_redis_client

    _, raw = alice_key
    monkeypatch.setitem(
        limits._backends, settings.REDIS_URL, RedisBackend(unreachable_redis_client())
    )
    caplog.set_level(logging.WARNING, logger="metering.lifecycle")
    assert _chat(client, raw, "no/such-model").status_code == 404
    record = UsageRecord.objects.get()
    assert (record.outcome, record.admitted) == ("client_error", False)
    (warning,) = [r for r in caplog.records if r.name == "metering.lifecycle"]
    assert warning.getMessage().startswith("refused-request counter unavailable: Redis ")


def _used(principal, plan, limit: str):
    return limits_status(principal=principal, plan=plan)[limit]["used"]


@pytest.mark.django_db(transaction=True)
def test_an_admitted_request_is_counted_and_settled_to_what_it_used(principal_and_plan):
    principal, plan = principal_and_plan
    usage = _usage(principal, "req_admit", prompt_tokens=5, completion_tokens=7)
    metered = MeteredRequest.admit(
        usage=usage, principal=principal, plan=plan, reserve_tokens=50, prompt_tokens=5
    )
    assert usage.admitted is True
    assert _used(principal, plan, "max_concurrent_requests") == 1
    assert _used(principal, plan, "tokens_per_day") == 50  # reserved
    metered.finish()
    metered.finish()  # runs once: no second record, no second settlement
    assert _used(principal, plan, "max_concurrent_requests") == 0
    assert _used(principal, plan, "tokens_per_day") == 12  # settled to what it used
    assert _used(principal, plan, "requests_per_day") == 1
    record = UsageRecord.objects.get(request_id="req_admit")
    assert (record.admitted, record.prompt_tokens, record.completion_tokens) == (True, 5, 7)


@pytest.mark.django_db(transaction=True)
def test_keep_alive_holds_the_slot_past_its_lease(principal_and_plan):
    """A stream longer than its lease keeps its concurrency slot while it keeps calling."""
    principal, plan = principal_and_plan
    metered = _admit(principal, plan, _usage(principal, "req_long"), lease_seconds=1)
    lease_ends = time.monotonic() + 1
    while time.monotonic() < lease_ends + 1.5:  # well past the lease
        metered.keep_alive()
        time.sleep(0.05)
    assert _used(principal, plan, "max_concurrent_requests") == 1
    metered.finish()
    assert _used(principal, plan, "max_concurrent_requests") == 0


@pytest.mark.django_db(transaction=True)
def test_the_direct_writer_quarantines_a_record_out_of_range(alice_key, caplog):
    key, _ = alice_key
    usage = Usage(request_id="req_direct_bad", user_id=key.owner_id, key_id=key.pk, endpoint="x")
    usage.prompt_tokens = -1
    with caplog.at_level(logging.ERROR, logger="metering.recording"):
        DirectWriter().submit(usage, None)
    # The operator's alert names the request, the writer and why.
    (alert,) = [r for r in caplog.records if r.name == "metering.recording"]
    assert alert.getMessage() == "usage record quarantined: prompt_tokens out of range: -1"
    assert (alert.usage_request_id, alert.source) == ("req_direct_bad", "direct")
    assert not UsageRecord.objects.exists()
    quarantined = QuarantinedUsage.objects.get()
    assert (quarantined.request_id, quarantined.source) == ("req_direct_bad", "direct")
    assert json.loads(quarantined.raw)["prompt_tokens"] == -1
    assert quarantined.error == "prompt_tokens out of range: -1"
