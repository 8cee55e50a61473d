"""Limits as customers meet them: 429s with OpenAI's codes and headers through the SDK and raw
HTTP, a token quota held under streaming, and Redis outages failing closed (or open)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from django.test import override_settings

from accounts.models import Plan
from metering.models import UsageRecord

HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def _set_plan(plan, **limits):
    from catalog.routing import bump_version

    Plan.objects.filter(pk=plan.pk).update(**limits)
    bump_version()  # the signal fires on commit; tests run inside a transaction


def _chat(client, raw, **extra):
    body = {
        "model": "cortensor/llama-3.1-8b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        **extra,
    }
    return client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


@pytest.mark.django_db
def test_rate_limit_headers_on_every_answer_and_429_after_the_rpm(client, catalog, plan, alice_key):
    _set_plan(plan, requests_per_minute=3, tokens_per_minute=10_000)
    _, raw = alice_key
    remaining = []
    for _ in range(3):
        response = _chat(client, raw)
        assert response.status_code == 200
        assert all(h in response for h in HEADERS)
        assert response["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(response["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    refused = _chat(client, raw)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "3 requests per minute" in error["message"]
    assert int(refused["Retry-After"]) >= 1
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert UsageRecord.objects.filter(outcome="rate_limited").count() == 1


@pytest.mark.django_db
def test_daily_quota_answers_insufficient_quota(client, catalog, plan, alice_key):
    _set_plan(plan, requests_per_day=2)
    _, raw = alice_key
    assert [_chat(client, raw).status_code for _ in range(2)] == [200, 200]
    refused = _chat(client, raw)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "Retry-After" in refused
    assert "day" in refused.json()["error"]["message"]


@pytest.mark.django_db(transaction=True)
def test_sdk_raises_rate_limit_error_with_headers(live_server, catalog, plan, alice_key):
    _set_plan(plan, requests_per_minute=1)
    _, raw = alice_key
    sdk = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, max_retries=0)
    ok = sdk.chat.completions.with_raw_response.create(
        model="cortensor/llama-3.1-8b", messages=[{"role": "user", "content": "x"}], max_tokens=1
    )
    assert ok.headers["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(
            model="cortensor/llama-3.1-8b",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=1,
        )
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"]


@pytest.mark.django_db(transaction=True)
def test_token_quota_holds_under_concurrent_streams(
    live_server, catalog, plan, alice_key, settings
):
    """Each stream reserves prompt + max_tokens; settled to the real count at the end, so the
    day's tokens never exceed the quota by more than what was in flight."""
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        pytest.skip(
            "the test database is in-memory SQLite, shared by the live server's "
            "threads through one connection: concurrent writes need PostgreSQL"
        )
    quota = 400
    _set_plan(
        plan,
        tokens_per_day=quota,
        requests_per_minute=None,
        tokens_per_minute=None,
        max_concurrent_requests=None,
    )
    _, raw = alice_key
    sdk = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, max_retries=0)

    def stream_once(_):
        try:
            chunks = list(
                sdk.chat.completions.create(
                    model="cortensor/llama-3.1-8b",
                    messages=[{"role": "user", "content": "go"}],
                    max_tokens=8,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            return chunks[-1].usage.total_tokens
        except openai.RateLimitError:
            return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream_once, range(40)))
    served = [r for r in results if r is not None]
    assert served and None in results
    recorded = sum(r.total_tokens for r in UsageRecord.objects.filter(outcome="ok"))
    assert recorded == sum(served)
    assert recorded <= quota
    assert UsageRecord.objects.count() == 40


@pytest.mark.django_db
def test_redis_down_fails_closed_and_pages_keep_working(client, catalog, alice_key, settings):
    if not settings.REDIS_URL:
        pytest.skip("the embedded default has no Redis to lose")
    from metering import limits
    from metering.limits.redis_backend import RedisBackend
    from tests.test_limits_support import unreachable_redis_client

    _, raw = alice_key
    assert _chat(client, raw).status_code == 200  # warm the key cache
    limits._backends[settings.REDIS_URL] = RedisBackend(unreachable_redis_client())
    refused = _chat(client, raw)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert client.get("/").status_code == 200
    with override_settings(LIMITS_FAIL_OPEN=True):
        assert _chat(client, raw).status_code == 200


@pytest.mark.django_db
def test_rate_limit_headers_also_on_model_lists_usage_and_refused_input(
    client, catalog, plan, alice_key
):
    _set_plan(plan, requests_per_minute=5, tokens_per_minute=1000)
    _, raw = alice_key
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert _chat(client, raw).status_code == 200  # the one admission
    refused_input = _chat(client, raw, temperature=9)
    assert refused_input.status_code == 400
    for response in (
        client.get("/v1/models", **auth),
        client.get("/v1/usage", **auth),
        refused_input,
    ):
        assert all(h in response for h in HEADERS), response
        assert response["x-ratelimit-limit-requests"] == "5"
        # Only the admitted request counts: lists, usage and refused input admit nothing.
        assert response["x-ratelimit-remaining-requests"] == "4"
