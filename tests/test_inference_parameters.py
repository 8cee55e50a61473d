"""No OpenAI parameter is silently ignored: what the routers can do is forwarded (`seed`,
`top_k`), what the portal can do is done (`echo`, `user` on the usage record and the request
list), and what neither can is refused with a 400 naming it. A request without `max_tokens`
may use what fits the model's context after its prompt, as OpenAI does (not 256 tokens)."""

from __future__ import annotations

import json

import pytest
import requests

from metering.models import UsageRecord

pytestmark = pytest.mark.django_db

MODEL = "cortensor/llama-3.1-8b"


def _post(client, raw, body, path="/v1/chat/completions"):
    return client.post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )


def _chat(**more):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], **more}


def _forwarded(router_sim) -> dict:
    seen = requests.get(f"{router_sim.url}/_sim/requests", headers=router_sim.headers, timeout=5)
    return seen.json()["requests"][-1]["body"]


def test_seed_and_top_k_reach_the_router(client, catalog, alice_key, router_sim):
    _, raw = alice_key
    assert _post(client, raw, _chat(max_tokens=2, seed=42, top_k=40)).status_code == 200
    body = _forwarded(router_sim)
    assert (body["seed"], body["top_k"]) == (42, 40)
    assert _post(client, raw, _chat(max_tokens=2)).status_code == 200
    assert "seed" not in _forwarded(router_sim)  # not sent: not invented


def test_user_is_recorded_and_shown_in_the_recent_requests(
    client, catalog, alice, alice_key, settings
):
    _, raw = alice_key
    answer = _post(client, raw, _chat(max_tokens=2, user="end-user-7781"))
    assert answer.status_code == 200
    record = UsageRecord.objects.get(request_id=answer["x-request-id"])
    assert record.end_user == "end-user-7781"
    client.force_login(alice)
    page = client.get("/dashboard").content.decode()
    assert "end-user-7781" in page


@pytest.mark.parametrize("user", ["x" * 257, "bad\x00byte", 42])
def test_a_bad_user_is_refused_by_name(client, catalog, alice_key, user):
    _, raw = alice_key
    refused = _post(client, raw, _chat(user=user))
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "user"


def test_echo_puts_the_prompt_before_the_completion(client, catalog, alice_key):
    _, raw = alice_key
    body = {"model": MODEL, "prompt": "Say this", "max_tokens": 3, "echo": True}
    text = _post(client, raw, body, "/v1/completions").json()["choices"][0]["text"]
    assert text.startswith("Say this") and len(text) > len("Say this")
    plain = _post(client, raw, {**body, "echo": False}, "/v1/completions").json()
    assert not plain["choices"][0]["text"].startswith("Say this")

    stream = _post(client, raw, {**body, "stream": True}, "/v1/completions")
    events = [
        json.loads(line[6:])
        for line in b"".join(stream.streaming_content).decode().split("\n")
        if line.startswith("data: {")
    ]
    assert events[0]["choices"][0]["text"] == "Say this"
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == text


@pytest.mark.parametrize(
    "param,value,path",
    [
        ("logit_bias", {"50256": -100}, "/v1/chat/completions"),
        ("logit_bias", {"50256": -100}, "/v1/completions"),
        ("n", 2, "/v1/chat/completions"),
        ("n", 3, "/v1/completions"),
        ("top_logprobs", 2, "/v1/chat/completions"),
        ("echo", True, "/v1/chat/completions"),
        ("top_k", -1, "/v1/chat/completions"),
        ("seed", "forty-two", "/v1/chat/completions"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(client, catalog, alice_key, param, value, path):
    _, raw = alice_key
    base = _chat() if path == "/v1/chat/completions" else {"model": MODEL, "prompt": "x"}
    refused = _post(client, raw, {**base, param: value}, path)
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["param"] == param


def test_empty_logit_bias_and_n_1_are_fine(client, catalog, alice_key):
    _, raw = alice_key
    assert _post(client, raw, _chat(max_tokens=2, logit_bias={}, n=1)).status_code == 200


# --- max_tokens left out ------------------------------------------------------------------------


@pytest.fixture
def small_context(catalog):
    """A model whose context is small enough for a prompt to eat into the default."""
    llama = catalog["llama"]
    llama.context_length, llama.max_tokens, llama.default_max_tokens = 300, 200, None
    llama.save()
    return llama


def test_without_max_tokens_the_answer_may_use_the_models_whole_output(
    client, small_context, alice_key, router_sim
):
    _, raw = alice_key
    answer = _post(client, raw, _chat())
    assert answer.status_code == 200
    assert _forwarded(router_sim)["max_tokens"] == 200  # the model's max, not 256 nor 64


def test_without_max_tokens_a_long_prompt_gets_what_is_left_of_the_context(
    client, small_context, alice_key, router_sim
):
    from inference.tokens import estimate_tokens

    _, raw = alice_key
    long = "word " * 150
    answer = _post(client, raw, {"model": MODEL, "prompt": long}, "/v1/completions")
    assert answer.status_code == 200
    assert _forwarded(router_sim)["max_tokens"] == 300 - estimate_tokens(long)
    assert 0 < 300 - estimate_tokens(long) < 200


def test_admission_reserves_the_same_default(client, small_context, alice, make_key):
    """A key allowing 150 tokens a minute cannot reserve the 200-token default."""
    _, raw = make_key(alice, "tpm 150", tokens_per_minute=150)
    refused = _post(client, raw, _chat())
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "Request too large" in message and "No max_tokens was sent" in message
    assert _post(client, raw, _chat(max_tokens=50)).status_code == 200


def test_a_catalog_default_still_caps_it(client, small_context, alice_key, router_sim):
    small_context.default_max_tokens = 16
    small_context.save()
    _, raw = alice_key
    assert _post(client, raw, _chat()).status_code == 200
    assert _forwarded(router_sim)["max_tokens"] == 16


def test_the_docs_and_models_pages_say_so(client, catalog, alice, small_context):
    client.force_login(alice)
    docs = client.get("/docs").content.decode()
    assert "whatever fits the model's context after your prompt" in docs
    models = client.get("/models").content.decode()
    assert "what fits the context after your prompt, up to 200" in models


def test_the_demo_catalog_and_a_config_file_leave_the_default_to_the_context(catalog):
    from catalog.models import CatalogModel
    from catalog.services import catalog_apply_config
    from portal.management.commands.seed_demo import demo_config

    assert all("default_max_tokens" not in m for m in demo_config("http://sim")["models"])
    llama = catalog["llama"]
    assert llama.default_max_tokens == 64
    catalog_apply_config(
        config={
            "models": [{"id": llama.public_id, "pool": llama.pool.name, "default_max_tokens": None}]
        }
    )
    assert CatalogModel.objects.get(pk=llama.pk).default_max_tokens is None


def test_anthropic_top_k_and_metadata_user_reach_the_router_and_the_record(
    client, catalog, alice_key, router_sim
):
    _, raw = alice_key
    answer = client.post(
        "/v1/messages",
        data=json.dumps(
            {
                "model": MODEL,
                "max_tokens": 2,
                "top_k": 17,
                "metadata": {"user_id": "anthropic-user-9"},
                "messages": [{"role": "user", "content": "Hi"}],
            }
        ),
        content_type="application/json",
        HTTP_X_API_KEY=raw,
        HTTP_ANTHROPIC_VERSION="2023-06-01",
    )
    assert answer.status_code == 200, answer.content
    assert _forwarded(router_sim)["top_k"] == 17
    record = UsageRecord.objects.get(request_id=answer["x-request-id"])
    assert (record.endpoint, record.end_user) == ("messages", "anthropic-user-9")
