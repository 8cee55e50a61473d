"""What browsers and the OpenAI SDKs read besides the body: CORS on /v1/ (a preflight never
meets a 401), and the retry signals (`x-should-retry`, `retry-after-ms`,
`openai-processing-ms`), so an SDK neither hammers a request that cannot succeed nor sleeps
before one that can never fit. A known key that may not be used says why, every time."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.cache import cache
from django.utils import timezone

pytestmark = pytest.mark.django_db

SDK_PREFLIGHT_HEADERS = (
    "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
    "x-stainless-runtime-version,x-stainless-timeout,x-stainless-brand-new"
)


def _preflight(client, path):
    return client.options(
        path,
        HTTP_ORIGIN="https://app.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=SDK_PREFLIGHT_HEADERS,
    )


def _post(client, raw, body, path="/v1/chat/completions", **extra):
    return client.post(
        path,
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
        **extra,
    )


def _chat(max_tokens=None, **more):
    body = {"model": "cortensor/llama-3.1-8b", "messages": [{"role": "user", "content": "x"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {**body, **more}


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/messages"]
)
def test_a_preflight_to_v1_is_answered_without_a_key(client, path):
    response = _preflight(client, path)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    for header in (
        "authorization",
        "content-type",
        "x-api-key",
        "anthropic-version",
        "openai-organization",
        "openai-project",
        "x-stainless-retry-count",
        "x-stainless-brand-new",  # any x-stainless-* the SDK asks for
    ):
        assert header in allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_a_preflight_through_the_lean_api_stack_too():
    """Production's WSGI entry point (portal/wsgi.py) runs /v1/ through API_MIDDLEWARE."""
    from portal.wsgi import application

    environ = {
        "PATH_INFO": "/v1/chat/completions",
        "REQUEST_METHOD": "OPTIONS",
        "wsgi.input": io.BytesIO(b""),
        "SERVER_NAME": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ORIGIN": "https://app.example",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    }
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, {k.lower(): v for k, v in headers}

    b"".join(application(environ, start_response))
    assert seen["status"].startswith("204")
    assert seen["headers"]["access-control-allow-origin"] == "*"


def test_answers_on_v1_expose_the_request_id_and_rate_limit_headers(client, catalog, alice_key):
    _, raw = alice_key
    for response in (
        client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}"),
        client.get("/v1/models"),  # a 401 too: the browser app must be able to read it
        _post(client, raw, _chat(max_tokens=2)),
    ):
        assert response["Access-Control-Allow-Origin"] == "*"
        exposed = response["Access-Control-Expose-Headers"].lower()
        assert "x-request-id" in exposed and "x-ratelimit-remaining-tokens" in exposed
        assert response["openai-processing-ms"].isdigit()


def test_answers_on_v1_name_the_methods_their_path_takes(client, catalog, alice_key):
    """DRF's Allow header, as each view's methods make it (HEAD wherever GET is), on answers
    and refusals alike, request after request."""
    _, raw = alice_key
    for _ in range(2):
        assert client.get("/v1/models")["Allow"] == "GET, HEAD, OPTIONS"
        models = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert models.status_code == 200 and models["Allow"] == "GET, HEAD, OPTIONS"
        answered = _post(client, raw, _chat(max_tokens=2))
        assert answered.status_code == 200 and answered["Allow"] == "POST, OPTIONS"
        wrong = client.get("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert wrong.status_code == 405 and wrong["Allow"] == "POST, OPTIONS"
        assert "Vary" not in answered


def test_pages_and_the_key_api_stay_same_origin(client, alice):
    for path in ("/", "/docs", "/api/keys"):
        response = client.get(path, HTTP_ORIGIN="https://evil.example")
        assert "Access-Control-Allow-Origin" not in response
        assert "openai-processing-ms" not in response
    assert "Access-Control-Allow-Origin" not in _preflight(client, "/api/keys")


def test_a_deterministic_4xx_tells_the_sdk_not_to_retry(client, catalog, alice_key):
    _, raw = alice_key
    bad = _post(client, raw, _chat(temperature=9))
    unknown = _post(client, raw, {**_chat(), "model": "cortensor/nope"})
    no_key = client.get("/v1/models")
    for response, status in ((bad, 400), (unknown, 404), (no_key, 401)):
        assert response.status_code == status
        assert response["x-should-retry"] == "false"


def test_a_rate_limit_says_retry_after_in_ms_too(client, catalog, alice, make_key):
    _, raw = make_key(alice, "one a minute", requests_per_minute=1)
    assert _post(client, raw, _chat(max_tokens=2)).status_code == 200
    limited = _post(client, raw, _chat(max_tokens=2))
    assert limited.status_code == 429
    assert int(limited["retry-after-ms"]) == int(limited["Retry-After"]) * 1000
    assert "x-should-retry" not in limited  # waiting a minute helps: the SDK may retry


def test_a_request_larger_than_the_tokens_per_minute_is_never_to_be_retried(
    client, catalog, alice, make_key
):
    _, raw = make_key(alice, "small tpm", tokens_per_minute=50)
    refused = _post(client, raw, _chat(max_tokens=64))
    assert refused.status_code == 429
    assert "Request too large" in refused.json()["error"]["message"]
    assert refused["x-should-retry"] == "false"
    assert "Retry-After" not in refused and "retry-after-ms" not in refused


def test_a_day_quota_spent_is_not_for_the_sdk_to_retry(client, catalog, alice, plan):
    from apikeys.services import apikey_create

    plan.requests_per_day = 1
    plan.save()
    _, raw = apikey_create(owner=alice, name="daily")
    assert _post(client, raw, _chat(max_tokens=2)).status_code == 200
    spent = _post(client, raw, _chat(max_tokens=2))
    assert spent.status_code == 429
    assert spent.json()["error"]["code"] == "insufficient_quota"
    assert spent["x-should-retry"] == "false"
    assert int(spent["retry-after-ms"]) == int(spent["Retry-After"]) * 1000


def test_a_revoked_key_says_so_every_time_and_is_never_throttled(client, catalog, alice_key):
    from apikeys.services import apikey_revoke

    key, raw = alice_key
    apikey_revoke(key=key)
    key.refresh_from_db()
    cache.clear()  # the entry must also be right when read from the database
    day = key.revoked_at.strftime("%Y-%m-%d")
    statuses = []
    for _ in range(60):
        response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
        statuses.append(response.status_code)
    assert statuses == [401] * 60
    message = response.json()["error"]["message"]
    assert f"revoked on {day}" in message
    assert response["x-should-retry"] == "false"


def test_an_expired_key_says_when_it_expired(client, catalog, alice, make_key):
    key, raw = make_key(alice, "soon", expires_at=timezone.now() + timedelta(seconds=1))
    type(key).objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(days=1))
    cache.clear()
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401
    assert "expired on" in response.json()["error"]["message"]


def test_guessed_keys_are_still_throttled(client, catalog):
    statuses = {
        client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer ctsk_guess{i:040d}").status_code
        for i in range(60)
    }
    assert 429 in statuses
