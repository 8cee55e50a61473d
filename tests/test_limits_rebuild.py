"""`manage.py limits_rebuild`: after Redis lost its data, the day, month and per-minute
counters come back from UsageRecord (only admitted requests count), idempotently."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from core.errors import QuotaExceeded
from metering.limits import limits_admit, limits_status
from metering.limits.base import key_prefix
from metering.models import UsageRecord
from tests.servehelpers import delete_prefix
from tests.test_limits_support import make_backend, make_plan


@pytest.fixture
def redis_backend(settings):
    return make_backend("redis", settings)


@pytest.fixture
def alice_usage(alice, make_key):
    """alice's history: what counts today, this month, in the last minute, and what does not."""
    key, _ = make_key(alice, "batch")
    now = timezone.now()
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)

    def record(rid, at, tokens, outcome=UsageRecord.Outcome.OK, admitted=True):
        UsageRecord.objects.create(
            request_id=rid,
            user=alice,
            key=key,
            endpoint="chat",
            outcome=outcome,
            http_status=200,
            total_tokens=tokens,
            created_at=at,
            admitted=admitted,
        )

    record("recent-1", now - timedelta(seconds=5), 100)
    record("recent-2", now - timedelta(seconds=20), 200)
    record("refused", now - timedelta(seconds=10), 0, UsageRecord.Outcome.RATE_LIMITED, False)
    # refused for bad input, before admission: the counters never saw it
    record("invalid", now - timedelta(seconds=15), 0, UsageRecord.Outcome.CLIENT_ERROR, False)
    record("failed", now - timedelta(seconds=30), 0, UsageRecord.Outcome.UPSTREAM_ERROR)
    record("early-today", max(day_start, now - timedelta(minutes=5)), 50)
    record("month-start", month_start, 1000)  # today too, on the 1st before 00:05
    record("last-month", month_start - timedelta(hours=1), 5000)
    # What counts follows from the same clock as the records: in the first seconds of a day
    # or a month, some "recent" records belong to the one before.
    counted = UsageRecord.objects.filter(admitted=True)
    today = counted.filter(created_at__gte=day_start)
    month = counted.filter(created_at__gte=month_start)
    return {
        "key": key,
        "day_requests": today.count(),
        "day_tokens": sum(today.values_list("total_tokens", flat=True)),
        "month_requests": month.count(),
        "month_tokens": sum(month.values_list("total_tokens", flat=True)),
    }


def principal_of(alice, key):
    from apikeys.services import KeyPrincipal

    return KeyPrincipal(
        key_id=key.pk,
        public_id=key.public_id,
        org_id=key.org_id,
        owner_id=alice.pk,
        owner_email=alice.email,
        plan_id=None,
        allowed_models=None,
        requests_per_minute=None,
        tokens_per_minute=None,
        expires_at=None,
    )


PLAN = make_plan(
    requests_per_minute=100,
    tokens_per_minute=100_000,
    requests_per_day=1000,
    tokens_per_day=10**6,
    requests_per_month=10**4,
    tokens_per_month=10**7,
)


def rebuild(*args) -> str:
    out = io.StringIO()
    call_command("limits_rebuild", *args, stdout=out)
    return out.getvalue()


def test_rebuild_restores_day_month_and_minute_counters_idempotently(
    alice, alice_usage, redis_backend
):
    who = principal_of(alice, alice_usage["key"])
    # Redis lost its data (this run's counters: other runs share the Redis database).
    delete_prefix(redis_backend.client, key_prefix())
    assert (
        limits_status(principal=who, plan=PLAN, backend=redis_backend)["requests_per_month"]["used"]
        == 0
    )
    assert "1 organization(s) and 3 request(s) of the last minute" in rebuild()
    rebuild()  # twice: nothing counted twice
    status = limits_status(principal=who, plan=PLAN, backend=redis_backend)
    assert status["requests_per_day"]["used"] == alice_usage["day_requests"]
    assert status["tokens_per_day"]["used"] == alice_usage["day_tokens"]
    assert status["requests_per_month"]["used"] == alice_usage["month_requests"]
    assert status["tokens_per_month"]["used"] == alice_usage["month_tokens"]
    assert status["requests_per_minute"]["used"] == 3  # the refused ones do not count
    assert status["tokens_per_minute"]["remaining"] == 100_000 - 300
    assert status["tokens_per_minute"]["used"] == 300


def test_a_rebuilt_quota_is_enforced(alice, alice_usage, redis_backend):
    who = principal_of(alice, alice_usage["key"])
    rebuild()
    plan = make_plan(requests_per_month=alice_usage["month_requests"] + 1)
    limits_admit(
        principal=who, plan=plan, reserve_tokens=0, request_id="one-more", backend=redis_backend
    )
    with pytest.raises(QuotaExceeded, match="per month"):
        limits_admit(
            principal=who, plan=plan, reserve_tokens=0, request_id="too-many", backend=redis_backend
        )


def test_rebuild_never_lowers_a_live_counter_unless_forced(alice, alice_usage, redis_backend):
    who = principal_of(alice, alice_usage["key"])
    rebuild()
    for i in range(3):  # admitted since Redis came back, no usage record yet
        limits_admit(
            principal=who,
            plan=PLAN,
            reserve_tokens=10,
            request_id=f"live-{i}",
            backend=redis_backend,
        )
    month = alice_usage["month_requests"]
    rebuild()
    used = limits_status(principal=who, plan=PLAN, backend=redis_backend)["requests_per_month"]
    assert used["used"] == month + 3
    rebuild("--force")
    used = limits_status(principal=who, plan=PLAN, backend=redis_backend)["requests_per_month"]
    assert used["used"] == month


def test_without_redis_there_is_nothing_to_rebuild(settings, db):
    settings.REDIS_URL = None
    from core.redis import get_redis

    get_redis.cache_clear()
    try:
        assert "nothing to rebuild" in rebuild()
    finally:
        get_redis.cache_clear()


def test_rebuild_restores_each_keys_own_counters(alice, alice_usage, redis_backend):
    from metering.limits import limits_key_usage

    key = alice_usage["key"]
    delete_prefix(redis_backend.client, key_prefix())
    rebuild()
    rebuild()
    usage = limits_key_usage(org_id=key.org_id, key_id=key.pk, backend=redis_backend)
    assert (usage["requests_per_day"], usage["tokens_per_day"]) == (
        alice_usage["day_requests"],
        alice_usage["day_tokens"],
    )
    assert (usage["requests_per_month"], usage["tokens_per_month"]) == (
        alice_usage["month_requests"],
        alice_usage["month_tokens"],
    )
