"""Anthropic's Messages API over HTTP: the shapes, the named stream events, the errors, and that
it is the chat completion's pipeline (same prompt to the router, same records, same limits).

The official SDK's view of the same is tests/test_anthropic_sdk.py.
"""

from __future__ import annotations

import json

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Plan
from inference import chat_templates, upstream
from inference.tokens import estimate_tokens
from metering.models import UsageRecord
from tests.routersim import RouterSim

pytestmark = pytest.mark.django_db

LLAMA = "cortensor/llama-3.1-8b"
WORDS = " word0 word1 word2 word3 word4 word5 word6 word7"  # the simulator's whole answer


def _post(client, path, body, raw, **headers):
    return client.post(
        path,
        json.dumps(body) if not isinstance(body, bytes | str) else body,
        content_type="application/json",
        HTTP_X_API_KEY=raw,
        HTTP_ANTHROPIC_VERSION="2023-06-01",
        **headers,
    )


def _message(client, raw, **fields):
    body = {
        "model": LLAMA,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Say hi"}],
        **fields,
    }
    return _post(client, "/v1/messages", body, raw)


def _events(response) -> list[tuple[str, dict]]:
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def _record(response) -> UsageRecord:
    return UsageRecord.objects.get(request_id=response["request-id"])


def _assert_anthropic_error(response, status: int, kind: str, *, mentions: str = "") -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert mentions in body["error"]["message"]
    assert body["request_id"] == response["request-id"] == response["x-request-id"]
    return body


# --- answers ---------------------------------------------------------------------------------


def test_message_shape_and_its_usage_record(client, catalog, alice_key):
    _, raw = alice_key
    response = _message(client, raw)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "msg_" + response["request-id"][4:]
    assert {k: body[k] for k in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
        "type": "message",
        "role": "assistant",
        "model": LLAMA,
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    assert body["content"] == [{"type": "text", "text": WORDS}]
    record = _record(response)
    assert record.endpoint == "messages"
    assert record.outcome == "ok" and record.admitted
    assert body["usage"] == {
        "input_tokens": record.prompt_tokens,
        "output_tokens": record.completion_tokens,
    }
    assert record.completion_tokens == 8
    assert response["x-request-id"] == response["request-id"]
    assert response["anthropic-ratelimit-requests-limit"] == response["x-ratelimit-limit-requests"]
    assert response["anthropic-ratelimit-requests-reset"].endswith("Z")


def test_max_tokens_and_stop_sequences_end_the_message_as_anthropic_says(
    client, catalog, alice_key
):
    _, raw = alice_key
    cut = _message(client, raw, max_tokens=3).json()
    assert cut["content"][0]["text"] == " word0 word1 word2"
    assert (cut["stop_reason"], cut["stop_sequence"]) == ("max_tokens", None)
    stopped = _message(client, raw, stop_sequences=[" word5", " word2"]).json()
    assert stopped["content"][0]["text"] == " word0 word1"
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", " word2")


def test_the_router_gets_the_chat_completions_prompt(client, catalog, alice_key, router_sim):
    """`system` plus `messages` are rendered exactly as a chat completion's messages."""
    _, raw = alice_key
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Tell "}, {"type": "text", "text": "me"}],
        },
    ]
    anthropic = _message(
        client, raw, system=[{"type": "text", "text": "Be brief."}], messages=turns
    )
    chat = client.post(
        "/v1/chat/completions",
        json.dumps(
            {
                "model": LLAMA,
                "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Tell me"},
                ],
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    seen = requests.get(f"{router_sim.url}/_sim/requests", headers=router_sim.headers).json()
    by_reference = {r["body"].get("client_reference"): r["body"] for r in seen["requests"]}
    sent = by_reference[anthropic["request-id"]]
    assert sent["prompt"] == by_reference[chat["x-request-id"]]["prompt"]
    assert sent["prompt"].startswith("<|begin_of_text|><|start_header_id|>system")
    assert sent["max_tokens"] == 100
    assert anthropic.json()["usage"]["input_tokens"] == chat.json()["usage"]["prompt_tokens"]


def test_count_tokens_counts_as_admission_does(client, catalog, alice_key):
    _, raw = alice_key
    body = {
        "model": LLAMA,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    response = _post(client, "/v1/messages/count_tokens", body, raw)
    assert response.status_code == 200
    prompt = chat_templates.render("llama3", [("system", "Be brief."), ("user", "Hello there")])
    assert response.json() == {"input_tokens": estimate_tokens(prompt)}
    assert not UsageRecord.objects.exists()  # nothing generated, nothing billed
    unknown = _post(client, "/v1/messages/count_tokens", {**body, "model": "x/y"}, raw)
    _assert_anthropic_error(unknown, 404, "not_found_error", mentions="x/y")


def test_bearer_auth_works_too(client, catalog, alice_key):
    _, raw = alice_key
    body = {"model": LLAMA, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    response = client.post(
        "/v1/messages",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
        HTTP_ANTHROPIC_BETA="no-such-beta-2099-01-01",
    )
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == " word0 word1"


def test_messages_count_in_the_ledger_and_v1_usage_like_chat(client, catalog, alice_key):
    from metering.models import DailyUsage
    from metering.services import usage_aggregate

    key, raw = alice_key
    message = _message(client, raw, max_tokens=3).json()
    chat = client.post(
        "/v1/chat/completions",
        json.dumps(
            {"model": LLAMA, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    ).json()
    usage = client.get("/v1/usage", HTTP_X_API_KEY=raw).json()
    tokens = sum(message["usage"].values()) + chat["usage"]["total_tokens"]
    assert usage["key"]["today"] == {"requests": 2, "tokens": tokens}
    usage_aggregate()
    (ledger,) = DailyUsage.objects.filter(key_id=key.pk)
    assert (ledger.requests, ledger.total_tokens) == (2, tokens)


# --- streams ---------------------------------------------------------------------------------


def test_stream_events_in_anthropic_order(client, catalog, alice_key):
    _, raw = alice_key
    response = _message(client, raw, stream=True, max_tokens=3)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = _events(response)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == []
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == " word0 word1 word2"
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    record = _record(response)
    assert record.endpoint == "messages" and record.streamed and record.outcome == "ok"
    assert final["usage"] == {
        "input_tokens": record.prompt_tokens,
        "output_tokens": record.completion_tokens,
    }


@pytest.mark.parametrize("text", ["word", ' say "hi"\n\t', "é 中文 \u2028 😀", "", "\x00", "\\"])
def test_a_text_delta_is_one_compact_json_event_whatever_the_text(text):
    from inference.anthropic_format import EventWriter

    raw = EventWriter(ident="msg_1", model="m", request_id="req_1").content(text)
    name, data, *rest = raw.decode().split("\n")
    assert name == "event: content_block_delta" and rest == ["", ""]
    payload = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    assert data == "data: " + json.dumps(payload, separators=(",", ":"))


def test_router_failure_mid_stream_ends_with_an_error_event(client, catalog, alice_key):
    _, raw = alice_key
    with RouterSim("--sessions", "1", "--drop-after", "2") as broken:
        catalog["router"].base_url = broken.url
        catalog["router"].save()
        from catalog.routing import bump_version

        bump_version()
        response = _message(client, raw, stream=True)
        events = _events(response)
    assert [n for n, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    name, error = events[-1]
    assert name == "error"
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "message_stop" not in [n for n, _ in events]
    record = _record(response)
    assert record.outcome == "upstream_error" and record.http_status == 502


def test_no_router_able_to_answer_is_overloaded_529(client, catalog, alice_key):
    from catalog.models import Router
    from catalog.routing import bump_version

    Router.objects.filter(pk=catalog["router"].pk).update(enabled=False)
    bump_version()
    _, raw = alice_key
    response = _message(client, raw)
    _assert_anthropic_error(response, 529, "overloaded_error")
    assert _record(response).outcome == "upstream_error"


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"tools": [{"name": "t", "input_schema": {"type": "object"}}]}, "tools"),
        ({"tool_choice": {"type": "auto"}}, "tool_choice"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": ""},
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "Document blocks",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
        ({"system": 5}, "system"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": "stop"}, "stop_sequences"),
        ({"top_k": -1}, "top_k"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id"),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": 5000}, "max_tokens"),
    ],
)
def test_refused_fields_are_named_in_a_400(client, catalog, alice_key, fields, mentions):
    _, raw = alice_key
    body = {
        "model": LLAMA,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
        **fields,
    }
    body = {k: v for k, v in body.items() if v is not None}
    response = _post(client, "/v1/messages", body, raw)
    _assert_anthropic_error(response, 400, "invalid_request_error", mentions=mentions)
    record = _record(response)
    assert record.endpoint == "messages" and record.outcome == "client_error"
    assert not record.admitted


def test_metadata_user_id_is_accepted(client, catalog, alice_key):
    _, raw = alice_key
    response = _message(client, raw, metadata={"user_id": "end-user-42"})
    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"HTTP_X_API_KEY": "ctsk_nope"}])
def test_bad_key_is_an_authentication_error(client, catalog, headers):
    body = json.dumps({"model": LLAMA, "max_tokens": 1, "messages": []})
    response = client.post("/v1/messages", body, content_type="application/json", **headers)
    _assert_anthropic_error(response, 401, "authentication_error")
    assert not UsageRecord.objects.exists()


def test_revoked_key_is_an_authentication_error(client, catalog, alice_key):
    from apikeys.services import apikey_revoke

    key, raw = alice_key
    apikey_revoke(key=key, actor=key.owner)
    _assert_anthropic_error(_message(client, raw), 401, "authentication_error")


def test_malformed_json_and_unknown_model(client, catalog, alice_key):
    _, raw = alice_key
    _assert_anthropic_error(
        _post(client, "/v1/messages", b"{nope", raw), 400, "invalid_request_error"
    )
    _assert_anthropic_error(
        _message(client, raw, model="cortensor/nope"), 404, "not_found_error", mentions="nope"
    )


def test_rate_limit_is_a_rate_limit_error_with_anthropic_headers(client, catalog, plan, alice_key):
    from catalog.routing import bump_version

    Plan.objects.filter(pk=plan.pk).update(requests_per_minute=1)
    bump_version()
    _, raw = alice_key
    assert _message(client, raw, max_tokens=1).status_code == 200
    refused = _message(client, raw, max_tokens=1)
    _assert_anthropic_error(refused, 429, "rate_limit_error")
    assert int(refused["retry-after"]) >= 1
    assert refused["anthropic-ratelimit-requests-limit"] == "1"
    assert refused["anthropic-ratelimit-requests-remaining"] == "0"
    assert _record(refused).outcome == "rate_limited"


def test_unknown_route_under_messages_is_anthropic_404(client, catalog, alice_key):
    _, raw = alice_key
    response = _post(client, "/v1/messages/batches", {}, raw)
    _assert_anthropic_error(response, 404, "not_found_error")


# --- models ------------------------------------------------------------------------------------


def test_models_in_anthropic_shape_only_when_asked(client, catalog, alice_key):
    _, raw = alice_key
    anthropic = client.get(
        "/v1/models", HTTP_X_API_KEY=raw, HTTP_ANTHROPIC_VERSION="2023-06-01"
    ).json()
    assert anthropic["has_more"] is False
    assert [m["id"] for m in anthropic["data"]] == [LLAMA, "cortensor/qwen-2.5-7b"]
    assert anthropic["first_id"] == LLAMA and anthropic["last_id"] == "cortensor/qwen-2.5-7b"
    assert anthropic["data"][0]["type"] == "model"
    assert anthropic["data"][0]["display_name"] == "Llama 3.1 8B"
    assert anthropic["data"][0]["created_at"].endswith("Z")
    one = client.get(f"/v1/models/{LLAMA}", HTTP_X_API_KEY=raw, HTTP_ANTHROPIC_VERSION="x").json()
    assert one == anthropic["data"][0]
    openai = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert openai["object"] == "list" and openai["data"][0]["object"] == "model"
    missing = client.get("/v1/models/x/y", HTTP_X_API_KEY=raw, HTTP_ANTHROPIC_VERSION="x")
    _assert_anthropic_error(missing, 404, "not_found_error")


# --- the hot path ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_no_database_query_before_the_upstream_call(
    client, catalog, alice_key, monkeypatch, stream
):
    _, raw = alice_key
    assert _message(client, raw, max_tokens=2).status_code == 200  # warm the caches

    seen = {}
    real_open = upstream.open_completion

    def observed_open(**kwargs):
        seen["queries_before_upstream"] = len(ctx.captured_queries)
        return real_open(**kwargs)

    monkeypatch.setattr(upstream, "open_completion", observed_open)
    with CaptureQueriesContext(connection) as ctx:
        response = _message(client, raw, max_tokens=2, stream=stream)
        if stream:
            b"".join(response.streaming_content)
    assert response.status_code == 200
    assert seen["queries_before_upstream"] == 0
    inserts = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1 and "metering_usagerecord" in inserts[0]
