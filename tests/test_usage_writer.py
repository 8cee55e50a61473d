"""The batch writer (production with Redis): records written in one statement, admissions
settled after, and requests whose process died before a flush recovered from the journal."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from metering.limits import limits_admit, limits_status
from metering.models import UsageRecord
from metering.recording import (
    Usage,
    UsageWriter,
    journal_entry,
    refused_journal_line,
    usage_journal_reconcile,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="the batch writer runs with Redis only"),
]


def _admitted(principal, plan, rid, *, lease_seconds=900):
    usage = Usage(
        request_id=rid,
        user_id=principal.owner_id,
        key_id=principal.key_id,
        endpoint="chat.completions",
        model="m",
        prompt_tokens=5,
        completion_tokens=7,
    )
    admission = limits_admit(
        principal=principal,
        plan=plan,
        reserve_tokens=50,
        request_id=rid,
        journal=journal_entry(usage, prompt_tokens=5),
        lease_seconds=lease_seconds,
    )
    return usage, admission


@pytest.fixture
def principal_and_plan(alice_key, plan):
    from apikeys.services import apikey_authenticate
    from catalog.routing import routing_table

    _, raw = alice_key
    principal = apikey_authenticate(raw_key=raw)
    return principal, routing_table().plan_for(principal.plan_id)


def test_flush_writes_the_batch_then_settles_it(principal_and_plan):
    principal, plan = principal_and_plan
    writer = UsageWriter()
    # Its loop must not flush while the test submits (30 admissions take longer than
    # FLUSH_SECONDS on a busy machine): this test flushes, once, itself.
    writer.FLUSH_SECONDS = 3600
    for i in range(30):
        writer.submit(*_admitted(principal, plan, f"req_w{i}"))
    status = limits_status(principal=principal, plan=plan)
    assert status["max_concurrent_requests"]["used"] == 30  # submitting settles nothing
    assert UsageRecord.objects.count() == 0
    assert writer.flush() == 30
    assert UsageRecord.objects.count() == 30
    assert all(r.total_tokens == 12 for r in UsageRecord.objects.all())
    status = limits_status(principal=principal, plan=plan)
    assert status["max_concurrent_requests"]["used"] == 0  # settled after the write
    assert usage_journal_reconcile() == 0  # nothing left to recover


def test_records_of_a_process_that_died_before_flushing_are_recovered(principal_and_plan):
    principal, plan = principal_and_plan
    _usage, _admission = _admitted(principal, plan, "req_lost", lease_seconds=1)
    # The process dies here: never flushed, never settled.
    assert usage_journal_reconcile() == 0  # its lease has not run out
    time.sleep(1.2)
    assert usage_journal_reconcile() == 1
    record = UsageRecord.objects.get(request_id="req_lost")
    assert (record.outcome, record.error_code, record.prompt_tokens) == (
        "cancelled",
        "request_lost",
        5,
    )
    assert usage_journal_reconcile() == 0


def _refused(principal, rid):
    return Usage(
        request_id=rid,
        user_id=principal.owner_id,
        key_id=principal.key_id,
        org_id=principal.org_id,
        endpoint="chat.completions",
        model="m",
        outcome=UsageRecord.Outcome.CLIENT_ERROR,
        http_status=400,
        error_code="invalid_request_error",
    )


def _journaled(member: str) -> bool:
    """In some organization's journal that the index names (where the reconciler looks)."""
    from core.redis import get_redis
    from metering.limits import keys

    client = get_redis()
    return any(
        client.hexists(keys.journal(org.decode()), member)
        for org in client.zrange(keys.journal_index(), 0, -1)
    )


def _make_due(member: str) -> None:
    """The clock moved on past the entry's due time (2 minutes): score it due now."""
    from core.redis import get_redis
    from metering.limits import keys

    client = get_redis()
    for org in client.zrange(keys.journal_index(), 0, -1):
        client.zadd(keys.journal_due(org.decode()), {member: 0}, xx=True)


def test_a_refused_requests_record_outlives_a_process_that_died_before_flushing(
    principal_and_plan, monkeypatch, settings
):
    from metering import lifecycle, recording

    settings.USAGE_WRITE_BATCHED = True
    principal, _ = principal_and_plan
    dead = UsageWriter()  # a process's writer that never flushes: it was SIGKILLed first
    monkeypatch.setattr(recording, "_writer", dead)
    monkeypatch.setattr(UsageWriter, "submit", lambda self, usage, admission: None)
    assert lifecycle.usage_refused(_refused(principal, "req_refused_lost")) is True
    assert _journaled("refused:req_refused_lost")
    assert usage_journal_reconcile() == 0  # not due: a live writer has minutes to write it
    _make_due("refused:req_refused_lost")
    assert usage_journal_reconcile() == 1
    record = UsageRecord.objects.get(request_id="req_refused_lost")
    # The record exactly as the request made it (nothing about a refusal is estimated).
    assert (record.outcome, record.http_status, record.admitted, record.estimated) == (
        "client_error",
        400,
        False,
        False,
    )
    assert not _journaled("refused:req_refused_lost")


def test_a_refused_entry_is_due_two_minutes_on_or_when_the_lease_ends_if_sooner(
    principal_and_plan, settings
):
    """The reconciler writes a refused record its writer did not: after two minutes (room
    for the writer to spool through a database outage), or sooner if a process whose lease
    ran out counts as dead sooner."""
    principal, _ = principal_and_plan
    usage = _refused(principal, "req_refused_due")
    settings.LIMITS_INFLIGHT_LEASE_SECONDS = 900
    assert refused_journal_line(usage, now_ms=5_000).due_ms == 125_000
    settings.LIMITS_INFLIGHT_LEASE_SECONDS = 30
    assert refused_journal_line(usage, now_ms=5_000).due_ms == 35_000


def test_a_written_refused_record_leaves_the_journal(principal_and_plan, monkeypatch, settings):
    from metering import lifecycle, recording

    settings.USAGE_WRITE_BATCHED = True
    principal, _ = principal_and_plan
    writer = UsageWriter()
    monkeypatch.setattr(recording, "_writer", writer)
    monkeypatch.setattr(writer, "_thread", object())  # no flush loop: this test flushes
    assert lifecycle.usage_refused(_refused(principal, "req_refused_ok")) is True
    assert _journaled("refused:req_refused_ok")
    writer.flush()
    assert UsageRecord.objects.filter(request_id="req_refused_ok", admitted=False).count() == 1
    assert not _journaled("refused:req_refused_ok")


def test_a_refused_request_over_the_refused_rate_leaves_no_journal_entry(
    principal_and_plan, monkeypatch, settings
):
    from metering import lifecycle, recording

    principal, _ = principal_and_plan
    settings.USAGE_REFUSED_PER_MINUTE = 1
    settings.USAGE_WRITE_BATCHED = True
    writer = UsageWriter()
    monkeypatch.setattr(recording, "_writer", writer)
    monkeypatch.setattr(writer, "_thread", object())  # no flush loop: this test flushes
    assert lifecycle.usage_refused(_refused(principal, "req_refused_1")) is True
    assert _journaled("refused:req_refused_1")
    assert lifecycle.usage_refused(_refused(principal, "req_refused_2")) is False
    assert not _journaled("refused:req_refused_2")
    writer.flush()
    assert not _journaled("refused:req_refused_1")
