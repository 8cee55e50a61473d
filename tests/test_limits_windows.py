"""Requests and tokens per minute: exact sliding windows, per user (plan) and per key (cap),
with OpenAI's headers and a 429 that says which limit and when it frees. Both backends."""

from __future__ import annotations

import pytest

from core.errors import RateLimited
from metering.limits import limits_admit
from metering.limits.base import format_reset
from tests.test_limits_support import (
    BACKENDS,
    future_ms,
    make_backend,
    make_plan,
    principal,
)


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    return make_backend(request.param, settings)


def admit(backend, who, plan, now_ms, *, reserve=0, rid="r"):
    return limits_admit(
        principal=who,
        plan=plan,
        reserve_tokens=reserve,
        request_id=rid,
        backend=backend,
        _now_ms=now_ms,
    )


def admitted_count(backend, who, plan, now_ms, attempts, **kwargs):
    count = 0
    for _ in range(attempts):
        try:
            admit(backend, who, plan, now_ms, **kwargs)
            count += 1
        except RateLimited:
            pass
    return count


def test_an_rpm_of_r_admits_exactly_r_in_any_minute_with_no_burst_at_a_minute_boundary(backend):
    plan, who = make_plan(requests_per_minute=5), principal()
    t0 = future_ms() + 59_900  # 100 ms before a wall-clock minute turns
    assert admitted_count(backend, who, plan, t0, 8) == 5
    # A fixed-window counter would reset here and admit 5 more: 10 within 200 ms.
    assert admitted_count(backend, who, plan, t0 + 200, 8) == 0
    assert admitted_count(backend, who, plan, t0 + 59_999, 8) == 0
    assert admitted_count(backend, who, plan, t0 + 60_000, 8) == 5


def test_the_window_frees_one_slot_as_each_admission_leaves_it(backend):
    plan, who = make_plan(requests_per_minute=3), principal()
    t0 = future_ms()
    for offset in (0, 10_000, 20_000):
        admit(backend, who, plan, t0 + offset)
    with pytest.raises(RateLimited) as refused:
        admit(backend, who, plan, t0 + 30_000)
    assert refused.value.headers["Retry-After"] == "30"  # the first leaves at t0 + 60 s
    admit(backend, who, plan, t0 + 60_000)
    with pytest.raises(RateLimited):
        admit(backend, who, plan, t0 + 60_001)
    admit(backend, who, plan, t0 + 70_000)


def test_a_key_cap_and_the_plan_both_apply(backend):
    plan = make_plan(requests_per_minute=6)
    narrow = principal(owner_id=101, key_id=1, rpm=2)
    other_key = principal(owner_id=101, key_id=2)
    t0 = future_ms()
    assert admitted_count(backend, narrow, plan, t0, 5) == 2  # the key's cap
    with pytest.raises(RateLimited, match="2 requests per minute for this API key"):
        admit(backend, narrow, plan, t0)
    assert admitted_count(backend, other_key, plan, t0, 10) == 4  # the plan's 6 per user
    with pytest.raises(RateLimited, match="6 requests per minute for your plan 'free'"):
        admit(backend, other_key, plan, t0)
    # another user is not affected
    assert admitted_count(backend, principal(owner_id=102), plan, t0, 3) == 3


def test_tpm_reserves_at_admission_and_settles_to_the_real_count(backend):
    plan, who, t0 = make_plan(tokens_per_minute=1000), principal(), future_ms()
    first = admit(backend, who, plan, t0, reserve=600)
    with pytest.raises(RateLimited, match=r"1000 tokens per minute .*600 used or reserved"):
        admit(backend, who, plan, t0 + 1, reserve=600)
    first.settle(total_tokens=100, _now_ms=t0 + 2)
    second = admit(backend, who, plan, t0 + 3, reserve=600)
    assert second.headers["x-ratelimit-remaining-tokens"] == "300"
    # only 300 left; they free when `first` (100 tokens) leaves the window at t0 + 60 s
    with pytest.raises(RateLimited) as refused:
        admit(backend, who, plan, t0 + 4, reserve=350)
    assert refused.value.headers["Retry-After"] == "60"
    admit(backend, who, plan, t0 + 60_000, reserve=350)


def test_a_request_larger_than_the_tpm_is_told_to_lower_max_tokens(backend):
    plan = make_plan(tokens_per_minute=1000)
    with pytest.raises(RateLimited, match=r"Request too large.*Lower max_tokens"):
        admit(backend, principal(), plan, future_ms(), reserve=1001)


def test_admission_headers_follow_openai_and_name_the_tighter_limit(backend):
    plan = make_plan(requests_per_minute=100, tokens_per_minute=5000)
    who, t0 = principal(rpm=10), future_ms()
    adm = admit(backend, who, plan, t0, reserve=200)
    assert adm.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "4800",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    later = admit(backend, who, plan, t0 + 45_500, reserve=0)
    assert later.headers["x-ratelimit-remaining-requests"] == "8"
    assert later.headers["x-ratelimit-reset-tokens"] == "14.5s"  # the 200 leave at t0 + 60 s


def test_a_429_carries_the_rate_headers_and_retry_after(backend):
    plan, who, t0 = make_plan(requests_per_minute=1), principal(), future_ms()
    admit(backend, who, plan, t0)
    with pytest.raises(RateLimited) as refused:
        admit(backend, who, plan, t0 + 48_000)
    err = refused.value
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.message == (
        "Rate limit reached: 1 requests per minute for your plan 'free'. Retry after 12s."
    )
    assert err.headers["Retry-After"] == "12"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "12s"


def test_no_plan_means_no_plan_limits_but_the_key_cap_holds(backend):
    t0 = future_ms()
    assert admitted_count(backend, principal(), None, t0, 50) == 50
    capped = principal(key_id=9, rpm=3)
    assert admitted_count(backend, capped, None, t0, 5) == 3


def test_a_limit_of_zero_refuses_everything(backend):
    plan = make_plan(requests_per_minute=0, tokens_per_minute=0)
    with pytest.raises(RateLimited) as refused:
        admit(backend, principal(), plan, future_ms(), reserve=0)
    assert refused.value.headers["Retry-After"] == "60"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (20, "20ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (3_723_000, "1h2m3s"),
    ],
)
def test_reset_durations_use_openais_format(ms, text):
    assert format_reset(ms) == text
