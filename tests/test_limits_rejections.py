"""A refused admission says how long to wait, for the limit that keeps the caller waiting
longest: until midnight UTC for a daily quota, until the month's end for a monthly one, within
the minute for a rate; and a request that could never fit its quota says so, while one that
exactly fills it is admitted. On both backends, on a fixed future clock.

Mutation testing (make mutate) found these unwatched: a Retry-After computed in the wrong
unit, from the wrong period, or dropped altogether still passed every test.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import QuotaExceeded, RateLimited
from metering.limits import limits_admit
from tests.test_limits_support import BACKENDS, future_ms, make_backend, make_plan, principal


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    return make_backend(request.param, settings)


def _admit(who, plan, backend, now, *, reserve=0, request_id="r"):
    return limits_admit(
        principal=who,
        plan=plan,
        reserve_tokens=reserve,
        request_id=request_id,
        backend=backend,
        _now_ms=now,
    )


def _seconds_until(now_ms: int, end: datetime) -> int:
    return math.ceil((end - datetime.fromtimestamp(now_ms / 1000, tz=UTC)).total_seconds())


def _day_end(now_ms: int) -> datetime:
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _month_end(now_ms: int) -> datetime:
    start = datetime.fromtimestamp(now_ms / 1000, tz=UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return (start + timedelta(days=32)).replace(day=1)


def test_a_daily_token_quota_waits_until_midnight_utc(backend):
    now = future_ms(hours=10)
    who, plan = principal(owner_id=501, key_id=601), make_plan(tokens_per_day=1000)
    _admit(who, plan, backend, now, reserve=800).settle(total_tokens=800, _now_ms=now)
    with pytest.raises(QuotaExceeded) as refused:
        _admit(who, plan, backend, now, reserve=300, request_id="r2")
    assert refused.value.headers["Retry-After"] == str(_seconds_until(now, _day_end(now)))
    assert "per day" in refused.value.message and "800 used" in refused.value.message


def test_a_monthly_request_quota_waits_until_the_month_ends(backend):
    now = future_ms(hours=10)
    who, plan = principal(owner_id=502, key_id=602), make_plan(requests_per_month=1)
    _admit(who, plan, backend, now)
    with pytest.raises(QuotaExceeded) as refused:
        _admit(who, plan, backend, now, request_id="r2")
    assert refused.value.headers["Retry-After"] == str(_seconds_until(now, _month_end(now)))
    assert "per month" in refused.value.message


def test_with_a_day_and_a_month_both_spent_the_longer_wait_is_given(backend):
    now = future_ms(hours=10)
    who = principal(owner_id=503, key_id=603)
    plan = make_plan(requests_per_day=1, requests_per_month=1)
    _admit(who, plan, backend, now)
    with pytest.raises(QuotaExceeded) as refused:
        _admit(who, plan, backend, now, request_id="r2")
    longest = max(_seconds_until(now, _day_end(now)), _seconds_until(now, _month_end(now)))
    assert refused.value.headers["Retry-After"] == str(longest)


def test_a_rate_limit_waits_within_the_minute_with_the_rate_headers(backend):
    now = future_ms(hours=10)
    who, plan = principal(owner_id=504, key_id=604), make_plan(requests_per_minute=1)
    _admit(who, plan, backend, now)
    with pytest.raises(RateLimited) as refused:
        _admit(who, plan, backend, now + 20_000, request_id="r2")
    assert refused.value.headers["Retry-After"] == "40"  # the first admission leaves at +60 s
    assert refused.value.headers["x-ratelimit-limit-requests"] == "1"


def test_a_reservation_larger_than_the_whole_quota_is_refused_as_too_large(backend):
    now = future_ms(hours=10)
    who, plan = principal(owner_id=505, key_id=605), make_plan(tokens_per_day=100)
    with pytest.raises(QuotaExceeded, match="Request too large") as refused:
        _admit(who, plan, backend, now, reserve=101)
    # No wait makes it fit: the SDKs must not sleep and send it again.
    assert "Retry-After" not in refused.value.headers
    assert refused.value.headers["x-should-retry"] == "false"
    _admit(who, plan, backend, now, reserve=100, request_id="r2")  # exactly the quota fits


def test_a_reservation_that_fits_the_quota_but_not_what_is_left_waits_for_the_reset(backend):
    now = future_ms(hours=10)
    who, plan = principal(owner_id=506, key_id=606), make_plan(tokens_per_day=100)
    _admit(who, plan, backend, now, reserve=10).settle(total_tokens=10, _now_ms=now)
    with pytest.raises(QuotaExceeded, match="Quota reached") as refused:
        _admit(who, plan, backend, now, reserve=100, request_id="r2")
    assert refused.value.headers["Retry-After"] == str(_seconds_until(now, _day_end(now)))
    assert refused.value.headers["x-should-retry"] == "false"  # hours away: not an SDK retry


def test_a_reservation_over_the_per_minute_tokens_is_never_to_be_retried(backend):
    """It can never fit the window: no 'sleep 60 s and try again'."""
    now = future_ms(hours=10)
    who, plan = principal(owner_id=507, key_id=607), make_plan(tokens_per_minute=100)
    with pytest.raises(RateLimited, match="Request too large") as refused:
        _admit(who, plan, backend, now, reserve=150)
    assert "Retry-After" not in refused.value.headers
    assert refused.value.headers["x-should-retry"] == "false"


def test_a_full_token_window_waits_until_just_enough_tokens_leave(backend):
    """100 tokens a minute: 20 at t0, 50 at t0+5 s; at t0+10 s a request of 50 needs 20 more
    room, exactly what the first frees when it leaves at t0+60 s: wait 50 s, not 55."""
    t0 = future_ms(hours=10)
    who, plan = principal(owner_id=508, key_id=608), make_plan(tokens_per_minute=100)
    _admit(who, plan, backend, t0, reserve=20).settle(total_tokens=20, _now_ms=t0)
    second = _admit(who, plan, backend, t0 + 5_000, reserve=50, request_id="r2")
    second.settle(total_tokens=50, _now_ms=t0 + 5_000)
    with pytest.raises(RateLimited) as refused:
        _admit(who, plan, backend, t0 + 10_000, reserve=50, request_id="r3")
    assert refused.value.headers["Retry-After"] == "50"
