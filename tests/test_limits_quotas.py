"""Daily and monthly quotas (UTC calendar), token reservations and settlement, the in-flight
cap and its leases, and the read-only status. Both backends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import QuotaExceeded, RateLimited
from metering.limits import limits_admit, limits_status
from metering.limits.memory_backend import MemoryBackend
from tests.test_limits_support import (
    BACKENDS,
    future_ms,
    make_backend,
    make_plan,
    principal,
)

DAY_MS = 86_400_000


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    return make_backend(request.param, settings)


def admit(backend, plan, now_ms, *, reserve=0, who=None, rid="r", **kwargs):
    return limits_admit(
        principal=who or principal(),
        plan=plan,
        reserve_tokens=reserve,
        request_id=rid,
        backend=backend,
        _now_ms=now_ms,
        **kwargs,
    )


def test_a_daily_request_quota_resets_at_utc_midnight(backend):
    plan = make_plan(requests_per_day=3)
    late = future_ms(hours=23) + 59 * 60_000  # 23:59 UTC
    for _ in range(3):
        admit(backend, plan, late)
    with pytest.raises(QuotaExceeded) as refused:
        admit(backend, plan, late + 30_000)
    err = refused.value
    assert err.status == 429 and err.code == "insufficient_quota"
    assert err.headers["Retry-After"] == "30"
    midnight = datetime.fromtimestamp((late + 60_000) / 1000, tz=UTC)
    assert err.message == (
        f"Quota reached: 3 requests per day for your plan 'free' (3 used). "
        f"It resets at {midnight:%Y-%m-%d %H:%M} UTC (in 30s)."
    )
    admit(backend, plan, late + 60_000)  # a new day


def test_a_monthly_quota_spans_days_and_resets_with_the_month(backend):
    plan = make_plan(requests_per_month=2)
    today = datetime.now(tz=UTC)
    month_start = datetime(
        today.year + (today.month + 1) // 12, (today.month + 1) % 12 + 1, 1, 10, tzinfo=UTC
    )  # 10:00 on the 1st of the month after next
    t0 = int(month_start.timestamp() * 1000)
    admit(backend, plan, t0)
    admit(backend, plan, t0 + DAY_MS)
    with pytest.raises(QuotaExceeded, match="2 requests per month") as refused:
        admit(backend, plan, t0 + 2 * DAY_MS)
    assert "It resets at" in refused.value.message
    admit(backend, plan, t0 + 40 * DAY_MS)  # the next month


def test_token_quota_checks_used_plus_reserved_and_settling_lower_frees_tokens(backend):
    plan, t0 = make_plan(tokens_per_day=1000), future_ms()
    a = admit(backend, plan, t0, reserve=400, rid="a")
    b = admit(backend, plan, t0, reserve=400, rid="b")
    with pytest.raises(QuotaExceeded, match="1000 tokens per day"):
        admit(backend, plan, t0, reserve=201)  # 800 reserved + 201 > 1000
    a.settle(total_tokens=50, _now_ms=t0)
    c = admit(backend, plan, t0, reserve=550, rid="c")  # 50 + 400 + 550 = 1000
    assert (
        limits_status(principal=principal(), plan=plan, backend=backend, _now_ms=t0)[
            "tokens_per_day"
        ]["used"]
        == 1000
    )
    b.settle(total_tokens=400, _now_ms=t0)
    c.settle(total_tokens=550, _now_ms=t0)


def test_tokens_overrun_a_quota_only_by_what_was_in_flight(backend):
    plan, t0 = make_plan(tokens_per_day=1000), future_ms()
    running = [admit(backend, plan, t0, reserve=250, rid=f"r{i}") for i in range(4)]
    with pytest.raises(QuotaExceeded):
        admit(backend, plan, t0, reserve=1)
    # every request in flight answers more than it reserved: that excess is the only overrun
    for adm in running:
        adm.settle(total_tokens=300, _now_ms=t0)
    status = limits_status(principal=principal(), plan=plan, backend=backend, _now_ms=t0)
    assert status["tokens_per_day"]["used"] == 1200
    assert status["tokens_per_day"]["remaining"] == 0
    with pytest.raises(QuotaExceeded):
        admit(backend, plan, t0, reserve=0)


def test_settle_is_idempotent(backend):
    plan, t0 = make_plan(tokens_per_day=1000, max_concurrent_requests=1), future_ms()
    adm = admit(backend, plan, t0, reserve=500)
    adm.settle(total_tokens=100, _now_ms=t0)
    adm.settle(total_tokens=100, _now_ms=t0)
    adm.settle(total_tokens=900, _now_ms=t0)
    assert adm.settled
    status = limits_status(principal=principal(), plan=plan, backend=backend, _now_ms=t0)
    assert status["tokens_per_day"]["used"] == 100
    assert status["max_concurrent_requests"]["used"] == 0


def test_a_request_ending_after_midnight_settles_into_the_day_it_was_admitted(backend):
    plan = make_plan(tokens_per_day=1000)
    before = future_ms(hours=23) + 3_599_000  # 23:59:59 UTC
    adm = admit(backend, plan, before, reserve=900)
    adm.settle(total_tokens=100, _now_ms=before + 2_000)
    status = limits_status(principal=principal(), plan=plan, backend=backend, _now_ms=before)
    assert status["tokens_per_day"]["used"] == 100
    after = limits_status(principal=principal(), plan=plan, backend=backend, _now_ms=before + 2_000)
    assert after["tokens_per_day"]["used"] == 0


def test_the_in_flight_cap_is_released_by_settle(backend):
    plan, t0 = make_plan(max_concurrent_requests=2), future_ms()
    a = admit(backend, plan, t0, rid="a")
    admit(backend, plan, t0, rid="b")
    with pytest.raises(RateLimited, match="Too many concurrent requests: 2 at a time"):
        admit(backend, plan, t0, rid="c")
    a.settle(total_tokens=0)
    admit(backend, plan, t0, rid="d")


def test_a_slot_never_settled_expires_with_its_lease(backend):
    plan, t0 = make_plan(max_concurrent_requests=1), future_ms()
    admit(backend, plan, t0, lease_seconds=30)  # its process dies: no settle, ever
    with pytest.raises(RateLimited):
        admit(backend, plan, t0 + 29_999)
    admit(backend, plan, t0 + 30_000)


def test_a_refused_request_counts_nothing(backend):
    plan, t0 = (
        make_plan(requests_per_minute=1, requests_per_day=5, tokens_per_day=1000),
        future_ms(),
    )
    admit(backend, plan, t0, reserve=10)
    for _ in range(3):
        with pytest.raises(RateLimited):
            admit(backend, plan, t0, reserve=10)
    status = limits_status(principal=principal(), plan=plan, backend=backend, _now_ms=t0)
    assert status["requests_per_day"]["used"] == 1
    assert status["tokens_per_day"]["used"] == 10


def test_status_reports_every_limit_and_admits_nothing(backend):
    plan = make_plan(
        requests_per_minute=10,
        tokens_per_minute=1000,
        requests_per_day=100,
        tokens_per_month=50_000,
        max_concurrent_requests=4,
    )
    t0 = future_ms()
    admit(backend, plan, t0, reserve=300)
    for _ in range(3):
        status = limits_status(
            principal=principal(), plan=plan, backend=backend, _now_ms=t0 + 15_000
        )
    now = datetime.fromtimestamp((t0 + 15_000) / 1000, tz=UTC)
    assert status["requests_per_minute"] == {
        "limit": 10,
        "used": 1,
        "remaining": 9,
        "reset_at": datetime.fromtimestamp((t0 + 60_000) / 1000, tz=UTC),
    }
    assert status["tokens_per_minute"]["used"] == 300
    assert status["requests_per_day"]["used"] == 1
    assert status["requests_per_day"]["reset_at"] == now.replace(
        hour=0, minute=0, second=0, microsecond=0
    ) + timedelta(days=1)
    assert status["tokens_per_month"] == {
        "limit": 50_000,
        "used": 300,
        "remaining": 49_700,
        "reset_at": status["tokens_per_month"]["reset_at"],
    }
    assert status["tokens_per_month"]["reset_at"].day == 1
    assert status["tokens_per_day"]["limit"] is None  # unlimited, still counted
    assert status["tokens_per_day"]["used"] == 300
    assert status["max_concurrent_requests"]["used"] == 1
    # the dashboard asks per organization, without a key in hand
    by_org = limits_status(org_id=101, plan=plan, backend=backend, _now_ms=t0 + 15_000)
    assert by_org["requests_per_day"]["used"] == 1


def test_threads_in_one_process_get_exactly_n_from_the_memory_backend():
    """The embedded default serves with threads: its lock must make N of N exact too."""
    backend, plan, t0 = MemoryBackend(), make_plan(requests_per_day=25), future_ms()
    admitted, start = [], threading.Barrier(8)

    def run(i):
        start.wait()
        for j in range(20):
            try:
                admit(backend, plan, t0, rid=f"{i}-{j}")
                admitted.append(1)
            except QuotaExceeded:
                pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 25
