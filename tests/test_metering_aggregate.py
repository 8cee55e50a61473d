"""Aggregation folds usage records into daily ledgers exactly once, however often it runs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from metering.models import DailyUsage, UsagePending, UsageRecord
from metering.services import usage_aggregate
from metering.tasks import aggregate_usage
from tests.builders import LLAMA, QWEN, usage_record

OUTCOMES = ["ok", "ok", "ok", "rate_limited", "upstream_error", "timeout", "cancelled"]


def _make_records(users_keys, n, *, start=None):
    """n records spread over users/keys, 5 days (one near a UTC midnight), 2 models, outcomes."""
    start = start or datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)
    records = []
    for i in range(n):
        user, key = users_keys[i % len(users_keys)]
        records.append(
            usage_record(
                user,
                key,
                save=False,
                at=start + timedelta(hours=7 * (i % 17), seconds=i),
                model=(LLAMA, QWEN)[i % 2],
                outcome=OUTCOMES[i % len(OUTCOMES)],
                prompt=i % 50,
                completion=(i * 7) % 30,
            )
        )
    UsageRecord.objects.bulk_create(records, batch_size=1000)
    return records


def _expected():
    """What the ledgers must say: computed straight from the records with the ORM."""
    rows = (
        UsageRecord.objects.order_by()
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "user_id", "key_id", "model")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=~Q(outcome="ok")),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            total_tokens=Sum("total_tokens"),
        )
    )
    return {
        (r["day"], r["user_id"], r["key_id"], r["model"]): (
            r["requests"],
            r["errors"],
            r["prompt_tokens"],
            r["completion_tokens"],
            r["total_tokens"],
        )
        for r in rows
    }


def _ledgers():
    return {
        (r.day, r.user_id, r.key_id, r.model): (
            r.requests,
            r.errors,
            r.prompt_tokens,
            r.completion_tokens,
            r.total_tokens,
        )
        for r in DailyUsage.objects.all()
    }


@pytest.fixture
def owners(alice, bob, make_key):
    alice_a, _ = make_key(alice, "a")
    alice_b, _ = make_key(alice, "b")
    bob_key, _ = make_key(bob, "bob")
    return [(alice, alice_a), (alice, alice_b), (bob, bob_key)]


def test_ledger_totals_equal_the_sum_of_records(owners):
    _make_records(owners, 700)
    assert usage_aggregate() == 700
    ledgers = _ledgers()
    assert ledgers == _expected()
    assert sum(v[0] for v in ledgers.values()) == 700
    assert not UsagePending.objects.exists()


def test_rate_limited_requests_count_as_requests_and_errors(alice, alice_key):
    key, _ = alice_key
    at = datetime(2026, 3, 2, 12, tzinfo=UTC)
    UsageRecord.objects.bulk_create(
        [
            usage_record(alice, key, save=False, at=at, outcome="ok", prompt=3, completion=4),
            usage_record(
                alice, key, save=False, at=at, outcome="rate_limited", prompt=0, completion=0
            ),
        ]
    )
    usage_aggregate()
    row = DailyUsage.objects.get()
    assert (row.day.isoformat(), row.requests, row.errors, row.total_tokens) == (
        "2026-03-02",
        2,
        1,
        7,
    )


def test_day_is_the_utc_date(alice, alice_key):
    key, _ = alice_key
    UsageRecord.objects.bulk_create(
        [
            usage_record(alice, key, save=False, at=datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)),
            usage_record(alice, key, save=False, at=datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC)),
        ]
    )
    usage_aggregate()
    assert sorted(d.isoformat() for d in DailyUsage.objects.values_list("day", flat=True)) == [
        "2026-03-01",
        "2026-03-02",
    ]


def test_aggregating_twice_changes_nothing(owners):
    _make_records(owners, 300)
    usage_aggregate()
    first = _ledgers()
    assert usage_aggregate() == 0
    assert _ledgers() == first == _expected()


def test_records_added_later_are_folded_in_incrementally(owners):
    _make_records(owners, 200)
    usage_aggregate(batch_size=64)  # several batches, the last one partial
    _make_records(owners, 150)  # same days, users and models: ledger rows are added to
    _make_records(owners, 50, start=datetime(2026, 4, 1, tzinfo=UTC))  # and new ones
    assert usage_aggregate(batch_size=64) == 200
    assert _ledgers() == _expected()
    assert sum(v[0] for v in _ledgers().values()) == 400


def test_time_budget_stops_between_batches_and_the_next_run_continues(owners):
    _make_records(owners, 100)
    assert usage_aggregate(batch_size=10, max_seconds=1e-9) == 10
    assert UsagePending.objects.count() == 90
    assert usage_aggregate(batch_size=10) == 90
    assert _ledgers() == _expected()


def test_the_celery_task_aggregates(owners):
    _make_records(owners, 40)
    assert aggregate_usage() == 40
    assert aggregate_usage() == 0
    assert _ledgers() == _expected()


def test_management_command_prints_how_many_it_folded(owners, capsys):
    _make_records(owners, 25)
    call_command("metering_aggregate")
    assert capsys.readouterr().out.startswith("Aggregated 25 usage records in ")
    call_command("metering_aggregate", "--batch-size", "7")
    assert capsys.readouterr().out.startswith("Aggregated 0 usage records in ")
    assert _ledgers() == _expected()


@pytest.mark.django_db(transaction=True)
def test_concurrent_aggregations_do_not_double_count(make_user, make_key):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has a single writer: two aggregations cannot run at once")
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    owners = [(alice, make_key(alice, "a")[0]), (bob, make_key(bob, "b")[0])]
    _make_records(owners, 6000)
    expected = _expected()

    barrier = threading.Barrier(3)
    results: list[int] = []
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait()
            results.append(usage_aggregate(batch_size=150))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(results) == 6000
    assert _ledgers() == expected
    assert not UsagePending.objects.exists()
