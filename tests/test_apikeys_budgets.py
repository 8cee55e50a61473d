"""Per-key budgets: a key's own requests and tokens per UTC day and month, checked in the same
single admission as the plan's quotas, counted per key, named in the refusal, shown in the
headers and in the status when they bind. Both backends; across processes in the last test."""

from __future__ import annotations

import pytest

from core.errors import QuotaExceeded
from metering.limits import limits_admit, limits_key_usage, limits_status
from metering.limits.base import Limits, rate_headers
from tests.test_limits_support import (
    BACKENDS,
    WorkerPool,
    future_ms,
    make_backend,
    make_plan,
    principal,
)

DAY_MS = 86_400_000


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    return make_backend(request.param, settings)


def admit(backend, who, now_ms, *, plan=None, reserve=0, rid="r"):
    return limits_admit(
        principal=who,
        plan=plan or make_plan(),
        reserve_tokens=reserve,
        request_id=rid,
        backend=backend,
        _now_ms=now_ms,
    )


def test_a_daily_request_budget_refuses_the_key_and_not_its_sibling(backend):
    t0 = future_ms()
    capped = principal(101, 201, requests_per_day=3)
    sibling = principal(101, 202)  # the same organization, no budget of its own
    for i in range(3):
        admit(backend, capped, t0 + i, rid=f"a{i}")
    with pytest.raises(QuotaExceeded) as refused:
        admit(backend, capped, t0 + 10, rid="a3")
    error = refused.value
    assert error.code == "insufficient_quota"
    assert error.param == "requests_per_day"
    assert "this key's daily request budget of 3" in error.message
    assert error.record_detail == "k_rpd"
    assert error.headers["x-should-retry"] == "false"
    # The plan is not what refused: the organization's other key goes on.
    admit(backend, sibling, t0 + 11, rid="b0")
    # The next UTC day the budget is whole again.
    admit(backend, capped, t0 + DAY_MS, rid="a4")


def test_the_plan_quota_still_binds_a_key_with_a_larger_budget(backend):
    t0 = future_ms()
    plan = make_plan(requests_per_day=2)
    who = principal(101, 201, requests_per_day=5)
    admit(backend, who, t0, plan=plan, rid="a0")
    admit(backend, principal(101, 202), t0 + 1, plan=plan, rid="b0")  # shares the plan's 2
    with pytest.raises(QuotaExceeded) as refused:
        admit(backend, who, t0 + 2, plan=plan, rid="a1")
    assert "for your plan 'free'" in refused.value.message
    assert refused.value.param is None


def test_a_daily_token_budget_counts_reservations_and_settles_to_the_real_count(backend):
    t0 = future_ms()
    who = principal(101, 201, tokens_per_day=100)
    first = admit(backend, who, t0, reserve=60, rid="a0")
    with pytest.raises(QuotaExceeded) as refused:
        admit(backend, who, t0 + 1, reserve=60, rid="a1")
    assert "this key's daily token budget of 100" in refused.value.message
    assert refused.value.param == "tokens_per_day"
    first.settle(total_tokens=10, _now_ms=t0 + 2)  # it used 10 of its 60
    admit(backend, who, t0 + 3, reserve=60, rid="a2")
    usage = limits_key_usage(org_id=101, key_id=201, backend=backend, _now_ms=t0 + 4)
    assert (usage["requests_per_day"], usage["tokens_per_day"]) == (2, 70)


def test_a_request_larger_than_the_whole_token_budget_is_told_so(backend):
    who = principal(101, 201, tokens_per_month=50)
    with pytest.raises(QuotaExceeded) as refused:
        admit(backend, who, future_ms(), reserve=80)
    assert "this key's whole monthly token budget of 50" in refused.value.message
    assert refused.value.headers["x-should-retry"] == "false"


def _two_days_in_one_month() -> int:
    """A future time whose next day is in the same UTC month."""
    from datetime import UTC, datetime

    t0 = future_ms()
    day = datetime.fromtimestamp(t0 / 1000, tz=UTC)
    if datetime.fromtimestamp((t0 + DAY_MS) / 1000, tz=UTC).month != day.month:
        t0 += 3 * DAY_MS  # past the month's end: now early in the next month
    return t0


def test_a_monthly_request_budget_spans_days(backend):
    t0 = _two_days_in_one_month()
    who = principal(101, 201, requests_per_month=2)
    admit(backend, who, t0, rid="a0")
    admit(backend, who, t0 + DAY_MS, rid="a1")  # another day, the same month
    with pytest.raises(QuotaExceeded) as refused:
        admit(backend, who, t0 + DAY_MS + 1, rid="a2")
    assert "this key's monthly request budget of 2" in refused.value.message


def test_headers_and_status_show_the_budget_when_it_binds(backend):
    t0 = future_ms()
    plan = make_plan(requests_per_minute=60, requests_per_day=1000)
    who = principal(101, 201, requests_per_day=5)
    admission = admit(backend, who, t0, plan=plan)
    # 59 left of the minute, 4 of the key's day: the day binds, and resets at UTC midnight.
    assert admission.headers["x-ratelimit-limit-requests"] == "5"
    assert admission.headers["x-ratelimit-remaining-requests"] == "4"
    assert admission.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "h" in admission.headers["x-ratelimit-reset-requests"]
    status = limits_status(principal=who, plan=plan, backend=backend, _now_ms=t0 + 1)
    assert status["requests_per_day"]["limit"] == 5
    assert status["requests_per_day"]["used"] == 1
    assert status["requests_per_day"]["remaining"] == 4
    # Without the budget the plan's quota is what the status shows.
    plain = limits_status(principal=principal(101, 202), plan=plan, backend=backend, _now_ms=t0)
    assert plain["requests_per_day"]["limit"] == 1000
    assert plain["requests_per_day"]["used"] == 1  # the organization's count


def test_headers_keep_the_minute_when_it_binds_tighter_than_a_budget():
    limits = Limits(plan_name="free", p_rpm=3, k_rpd=100)
    from metering.limits.base import LimitsVerdict

    outcome = LimitsVerdict(
        admitted=True,
        now_ms=future_ms(),
        used={"p_rpm": 1, "k_rpd": 1},
        reset_ms={"p_rpm": 60_000},
    )
    headers = rate_headers(limits, outcome)
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "x-ratelimit-limit-tokens" not in headers  # no token limit of any kind applies


# --- across processes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers():
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    pool = WorkerPool(5)
    yield pool
    pool.close()


@pytest.mark.slow
def test_a_key_budget_of_25_admits_exactly_25_of_100_concurrent_calls(workers, settings):
    redis_backend = make_backend("redis", settings)
    t0 = future_ms()
    # Five processes at once, 20 attempts each: 100 calls on one key with requests_per_day=25.
    budgeted = {"requests_per_day": 25}
    results = workers.run(
        {"plan": {}, "key": budgeted, "key_id": 301, "attempts": 20, "settle": 0, "now_ms": t0}
    )
    assert sum(r["admitted"] for r in results) == 25
    assert sum(r["refused"] for r in results) == 75
    # The organization's other key is unaffected: all its 100 calls go through.
    other = workers.run({"plan": {}, "key_id": 302, "attempts": 20, "settle": 0, "now_ms": t0})
    assert sum(r["admitted"] for r in other) == 100
    usage = limits_key_usage(org_id=101, key_id=301, backend=redis_backend, _now_ms=t0)
    assert usage["requests_per_day"] == 25
    status = limits_status(
        principal=principal(101, 301, **budgeted),
        plan=make_plan(),
        backend=redis_backend,
        _now_ms=t0,
    )
    assert status["requests_per_day"] == {
        "limit": 25,
        "used": 25,
        "remaining": 0,
        "reset_at": status["requests_per_day"]["reset_at"],
    }


# --- through the API ------------------------------------------------------------------------


def _chat(client, raw):
    import json

    return client.post(
        "/v1/chat/completions",
        json.dumps(
            {
                "model": "cortensor/llama-3.1-8b",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


@pytest.mark.django_db
def test_the_api_refuses_the_key_past_its_budget_and_v1_usage_shows_it(
    client, catalog, alice, make_key
):
    _, raw = make_key(alice, "capped", requests_per_day=2)
    _, other = make_key(alice, "uncapped")
    first = _chat(client, raw)
    assert first.status_code == 200
    assert first["x-ratelimit-limit-requests"] == "2"  # the budget binds, not the plan's 1000
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert _chat(client, raw).status_code == 200
    refused = _chat(client, raw)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "insufficient_quota",
        "insufficient_quota",
        "requests_per_day",
    )
    assert "this key's daily request budget of 2" in error["message"]
    assert _chat(client, other).status_code == 200

    body = client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert body["key"]["budgets"]["requests_per_day"]["limit"] == 2
    assert body["key"]["budgets"]["requests_per_day"]["used"] == 2
    assert body["key"]["budgets"]["requests_per_day"]["remaining"] == 0
    assert body["key"]["budgets"]["tokens_per_month"]["limit"] is None
    assert body["limits"]["requests_per_day"]["limit"] == 2  # whichever binds
    assert body["limits"]["requests_per_day"]["remaining"] == 0
    plain = client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {other}").json()
    assert plain["limits"]["requests_per_day"]["limit"] is None
