"""The hot path reads no database before the upstream call: keys and catalog come from caches."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inference import upstream

pytestmark = pytest.mark.django_db


def _chat(client, raw, **extra):
    body = {
        "model": "cortensor/llama-3.1-8b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        **extra,
    }
    return client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


@pytest.mark.parametrize("stream", [False, True])
def test_no_database_query_before_the_upstream_call(
    client, catalog, alice_key, monkeypatch, stream
):
    _, raw = alice_key
    assert _chat(client, raw).status_code == 200  # warm-up: key and catalog caches, last_used

    seen = {}
    real_open = upstream.open_completion

    def observed_open(**kwargs):
        seen["queries_before_upstream"] = len(ctx.captured_queries)
        return real_open(**kwargs)

    monkeypatch.setattr(upstream, "open_completion", observed_open)
    with CaptureQueriesContext(connection) as ctx:
        response = _chat(client, raw, stream=stream)
        if stream:
            b"".join(response.streaming_content)
    assert response.status_code == 200
    assert seen["queries_before_upstream"] == 0
    inserts = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1 and "metering_usagerecord" in inserts[0]


def test_models_list_makes_no_query_after_warm_up(
    client, catalog, alice_key, django_assert_num_queries
):
    _, raw = alice_key
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    with django_assert_num_queries(0):
        response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200


def test_catalog_change_is_seen_by_the_next_request(
    client, catalog, alice_key, django_capture_on_commit_callbacks
):
    _, raw = alice_key

    def names():
        return [
            m["id"]
            for m in client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["data"]
        ]

    assert "cortensor/qwen-2.5-7b" in names()
    with django_capture_on_commit_callbacks(execute=True):
        catalog["qwen"].enabled = False
        catalog["qwen"].save()
    assert names() == ["cortensor/llama-3.1-8b"]


def test_forwarded_request_carries_session_prompt_and_reference(
    client, catalog, alice_key, router_sim
):
    import requests

    _, raw = alice_key
    response = _chat(client, raw, temperature=0.5)
    request_id = response["x-request-id"]
    seen = requests.get(f"{router_sim.url}/_sim/requests", headers=router_sim.headers).json()
    forwarded = next(r for r in seen["requests"] if r["body"].get("client_reference") == request_id)
    assert (forwarded["content_type"], forwarded["accept"]) == ("application/json",) * 2
    body = forwarded["body"]
    assert body["session_id"] == 1
    assert body["prompt_type"] == 1
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 2
    assert body["prompt"].startswith("<|begin_of_text|><|start_header_id|>user")


def test_a_forwarded_stream_asks_for_an_event_stream(client, catalog, alice_key, router_sim):
    import requests

    _, raw = alice_key
    response = _chat(client, raw, stream=True)
    assert response.status_code == 200
    b"".join(response.streaming_content)
    request_id = response["x-request-id"]
    seen = requests.get(f"{router_sim.url}/_sim/requests", headers=router_sim.headers).json()
    forwarded = next(r for r in seen["requests"] if r["body"].get("client_reference") == request_id)
    assert (forwarded["content_type"], forwarded["accept"]) == (
        "application/json",
        "text/event-stream",
    )
    assert forwarded["body"]["stream"] is True


def test_key_budgets_and_a_rotated_secret_in_its_grace_add_no_query(
    client, catalog, alice, make_key, monkeypatch, django_capture_on_commit_callbacks
):
    from apikeys.services import apikey_rotate

    key, old = make_key(alice, "budgeted", requests_per_day=100, tokens_per_month=10**6)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_rotate(key=key, grace_seconds=3600)
    assert _chat(client, old).status_code == 200  # warm-up, with the previous secret

    seen = {}
    real_open = upstream.open_completion

    def observed_open(**kwargs):
        seen["queries_before_upstream"] = len(ctx.captured_queries)
        return real_open(**kwargs)

    monkeypatch.setattr(upstream, "open_completion", observed_open)
    with CaptureQueriesContext(connection) as ctx:
        response = _chat(client, old)
    assert response.status_code == 200
    assert response["x-ratelimit-limit-requests"] == "100"  # the budget binds the headers
    assert seen["queries_before_upstream"] == 0
