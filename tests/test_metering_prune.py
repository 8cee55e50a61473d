"""Pruning deletes old, already-aggregated records in bounded batches and keeps the ledgers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.models import DailyUsage, UsageRecord
from metering.services import usage_aggregate, usage_prune
from metering.tasks import prune_usage
from tests.builders import usage_records


@pytest.fixture
def key(alice_key):
    return alice_key[0]


def test_prune_deletes_only_old_records_in_batches_and_keeps_ledgers(alice, key):
    usage_records(alice, key, at=timezone.now() - timedelta(days=100), n=25, prompt=2, completion=3)
    usage_records(alice, key, at=timezone.now() - timedelta(days=2), n=7, prompt=2, completion=3)
    usage_aggregate()
    ledgers = list(DailyUsage.objects.values_list("day", "requests", "total_tokens"))

    with CaptureQueriesContext(connection) as ctx:
        assert usage_prune(older_than_days=90, batch_size=10) == 25
    deletes = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 10 + 10 + 5: bounded batches, not one huge DELETE
    assert all("LIMIT 10" in sql for sql in deletes)

    assert UsageRecord.objects.count() == 7
    assert not UsageRecord.objects.filter(
        created_at__lt=timezone.now() - timedelta(days=90)
    ).exists()
    assert list(DailyUsage.objects.values_list("day", "requests", "total_tokens")) == ledgers
    assert sum(r for _, r, _ in ledgers) == 32


def test_prune_keeps_old_records_not_yet_aggregated(alice, key):
    usage_records(alice, key, at=timezone.now() - timedelta(days=100), n=4, prompt=2, completion=3)
    assert usage_prune(older_than_days=90) == 0
    assert UsageRecord.objects.count() == 4
    usage_aggregate()
    assert usage_prune(older_than_days=90) == 4


def test_prune_task_uses_the_retention_setting(alice, key, settings):
    settings.USAGE_RETENTION_DAYS = 30
    usage_records(alice, key, at=timezone.now() - timedelta(days=31), n=3, prompt=2, completion=3)
    usage_records(alice, key, at=timezone.now() - timedelta(days=29), n=2, prompt=2, completion=3)
    usage_aggregate()
    assert prune_usage() == 3
    assert prune_usage() == 0
    assert UsageRecord.objects.count() == 2


def test_prune_refuses_a_zero_retention():
    with pytest.raises(ValueError):
        usage_prune(older_than_days=0)
