"""The official `anthropic` SDK pointed at the portal works with only `base_url` and the key
changed, against a real router simulator over HTTP, on both shapes the portal runs in:

- embedded: the test process's own server (pytest-django's live_server) on the embedded
  default (or on PostgreSQL and Redis when the environment names them);
- served: as production serves it (gunicorn, gevent workers, DEBUG off, the lean /v1/ stack,
  the batched usage writer: tests/servehelpers.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anthropic
import pytest

from inference import chat_templates
from inference.tokens import estimate_tokens
from tests.routersim import RouterSim
from tests.servehelpers import (
    Gunicorn,
    config_file,
    db_query,
    enabled_models,
    manage_many,
    provision,
)

pytestmark = pytest.mark.django_db(transaction=True)

LLAMA = "cortensor/llama-3.1-8b"
QWEN = "cortensor/qwen-2.5-7b"
MODELS = ((LLAMA, "llama3"), (QWEN, "chatml"))
WORDS = " word0 word1 word2 word3 word4 word5 word6 word7"  # the simulator's whole answer


@dataclass
class Portal:
    url: str
    key: str
    tight_key: Callable[[], str]  # a key whose plan allows one request a minute
    record: Callable[[str], dict]  # the usage record of a request id, once written
    enabled_models: Callable[[], list[str]]  # the catalog's enabled models, in the list's order
    clients: list[anthropic.Anthropic] = field(default_factory=list)

    def sdk(self, **kwargs) -> anthropic.Anthropic:
        if "auth_token" not in kwargs:
            kwargs.setdefault("api_key", self.key)
        client = anthropic.Anthropic(base_url=self.url, max_retries=0, timeout=20, **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Close the SDKs' kept-alive connections while the server still runs: the embedded
        live server's request threads must not outlive it (they close its SQLite connection)."""
        while self.clients:
            self.clients.pop().close()


def _wait_for(fetch: Callable[[], list[dict]]) -> dict:
    deadline = time.monotonic() + 15
    while True:
        rows = fetch()
        if rows or time.monotonic() > deadline:
            assert rows, "the usage record was never written"
            return rows[0]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def served_portal():
    sim = RouterSim("--sessions", "1,2")
    database_url, key = provision(sim, email="anthropic-sdk@example.com", models=MODELS)
    # Before the server starts: without Redis its catalog cache is its own, and would not see
    # a plan added later.
    plan = {"name": "anthropic-sdk-tight", "requests_per_minute": 1, "models": ["*"]}
    with config_file({"plans": [plan]}) as path:
        _, tight = manage_many(
            ["apply_config", path],
            [
                "apikey_create",
                "--email",
                "anthropic-sdk-tight@example.com",
                "--name",
                "tight",
                "--plan",
                "anthropic-sdk-tight",
                "--create-user",
            ],
            database_url=database_url,
        )
    tight = tight.strip()
    server = Gunicorn(database_url=database_url)

    def tight_key() -> str:
        return tight

    def record(request_id: str) -> dict:
        query = "SELECT * FROM metering_usagerecord WHERE request_id = %s"
        return _wait_for(lambda: db_query(database_url, query, [request_id]))

    portal = Portal(
        url=server.url,
        key=key,
        tight_key=tight_key,
        record=record,
        enabled_models=lambda: enabled_models(database_url),
    )
    yield portal
    portal.close()
    server.stop()
    sim.stop()


@pytest.fixture(params=["embedded", pytest.param("served", marks=pytest.mark.slow)])
def portal(request):
    if request.param == "served":
        served = request.getfixturevalue("served_portal")
        yield served
        served.close()
        return
    live_server = request.getfixturevalue("live_server")
    request.getfixturevalue("catalog")
    make_user, make_key = (request.getfixturevalue(n) for n in ("make_user", "make_key"))
    _, raw = request.getfixturevalue("alice_key")

    def tight_key() -> str:
        from accounts.models import Plan

        tight = Plan.objects.create(name="tight", requests_per_minute=1, all_models=True)
        return make_key(make_user("tight@example.com", plan_=tight), "tight")[1]

    def record(request_id: str) -> dict:
        from metering.models import UsageRecord

        return _wait_for(lambda: list(UsageRecord.objects.filter(request_id=request_id).values()))

    def enabled() -> list[str]:
        from catalog.models import CatalogModel

        return list(CatalogModel.objects.filter(enabled=True).values_list("public_id", flat=True))

    embedded = Portal(
        url=live_server.url, key=raw, tight_key=tight_key, record=record, enabled_models=enabled
    )
    yield embedded
    embedded.close()


def _say(client: anthropic.Anthropic, **fields):
    fields.setdefault("model", LLAMA)
    fields.setdefault("max_tokens", 100)
    fields.setdefault("messages", [{"role": "user", "content": "Say hi"}])
    return client.messages.create(**fields)


def test_create_without_system(portal):
    message = _say(portal.sdk())
    assert message.type == "message" and message.role == "assistant"
    assert message.model == LLAMA
    assert message.id.startswith("msg_")
    assert [(b.type, b.text) for b in message.content] == [("text", WORDS)]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 8
    record = portal.record(message._request_id)
    assert record["endpoint"] == "messages" and record["outcome"] == "ok"
    assert record["prompt_tokens"] == message.usage.input_tokens
    assert record["completion_tokens"] == 8


def test_create_with_system(portal):
    client = portal.sdk()
    plain = _say(client, max_tokens=3)
    with_system = _say(client, max_tokens=3, system="You are terse and exact.")
    listed = _say(
        client, max_tokens=3, system=[{"type": "text", "text": "You are terse and exact."}]
    )
    assert with_system.content[0].text == " word0 word1 word2"
    assert with_system.stop_reason == "max_tokens"
    assert with_system.usage.input_tokens > plain.usage.input_tokens
    assert listed.usage.input_tokens == with_system.usage.input_tokens


def test_multi_turn(portal):
    client = portal.sdk()
    one = _say(client, model=QWEN)
    three = _say(
        client,
        model=QWEN,
        messages=[
            {"role": "user", "content": "Say hi"},
            {"role": "assistant", "content": one.content[0].text},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        stop_sequences=[" word3"],
    )
    assert three.content[0].text == " word0 word1 word2"
    assert (three.stop_reason, three.stop_sequence) == ("stop_sequence", " word3")
    assert three.usage.input_tokens > one.usage.input_tokens


def test_stream_text_matches_the_final_message(portal):
    with portal.sdk().messages.stream(
        model=LLAMA, max_tokens=5, messages=[{"role": "user", "content": "Stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    assert text == " word0 word1 word2 word3 word4"
    assert final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 5
    record = portal.record(request_id)
    assert record["streamed"] and record["endpoint"] == "messages"
    assert final.usage.input_tokens == record["prompt_tokens"]


def test_bad_key_raises_authentication_error(portal):
    with pytest.raises(anthropic.AuthenticationError) as info:
        _say(portal.sdk(api_key="ctsk_not_a_key"))
    assert info.value.body["error"]["type"] == "authentication_error"
    assert info.value.request_id


def test_unknown_model_raises_not_found(portal):
    with pytest.raises(anthropic.NotFoundError) as info:
        _say(portal.sdk(), model="cortensor/nope")
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "cortensor/nope" in info.value.message


def test_refused_field_raises_bad_request(portal):
    client = portal.sdk()
    with pytest.raises(anthropic.BadRequestError) as info:
        _say(client, tools=[{"name": "lookup", "input_schema": {"type": "object"}}])
    assert "tools" in info.value.message
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        _say(client, messages=[{"role": "user", "content": [image]}])
    assert "messages.0.content.0.type" in info.value.message


def test_rate_limit_raises_rate_limit_error(portal):
    client = portal.sdk(api_key=portal.tight_key())
    _say(client, max_tokens=1)
    with pytest.raises(anthropic.RateLimitError) as info:
        _say(client, max_tokens=1)
    headers = info.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["anthropic-ratelimit-requests-limit"] == "1"
    assert info.value.body["error"]["type"] == "rate_limit_error"


def test_count_tokens(portal):
    counted = portal.sdk().messages.count_tokens(
        model=LLAMA, system="Be brief.", messages=[{"role": "user", "content": "Hello there"}]
    )
    prompt = chat_templates.render("llama3", [("system", "Be brief."), ("user", "Hello there")])
    assert counted.input_tokens == estimate_tokens(prompt)


def test_models_list(portal):
    client = portal.sdk()
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert ids == portal.enabled_models()  # served: other modules' models too, if they ran first
    assert {LLAMA, QWEN} <= set(ids)
    assert all(m.type == "model" and m.display_name for m in models)
    assert client.models.retrieve(QWEN).id == QWEN


def test_bearer_auth_through_auth_token(portal):
    client = portal.sdk(auth_token=portal.key)
    assert _say(client, max_tokens=2).content[0].text == " word0 word1"
    bad = portal.sdk(auth_token="ctsk_nope")
    with pytest.raises(anthropic.AuthenticationError):
        _say(bad)


# --- router failures, as the SDK meets them (embedded: the test moves the catalog's router) ----


@pytest.fixture
def embedded(live_server, catalog, alice_key):
    client = anthropic.Anthropic(
        base_url=live_server.url, api_key=alice_key[1], max_retries=0, timeout=20
    )
    yield client, catalog
    client.close()


def _route_to(router, url: str | None) -> None:
    from catalog.routing import bump_version

    if url is None:
        router.enabled = False
    else:
        router.base_url = url
    router.save()
    bump_version()


def test_a_stream_broken_by_its_router_raises_with_the_error_event(embedded):
    client, catalog = embedded
    with RouterSim("--sessions", "1", "--drop-after", "2") as broken:
        _route_to(catalog["router"], broken.url)
        received = []
        with (
            pytest.raises(anthropic.APIStatusError) as info,
            client.messages.stream(
                model=LLAMA, max_tokens=100, messages=[{"role": "user", "content": "x"}]
            ) as stream,
        ):
            received.extend(stream.text_stream)
    assert "".join(received) == " word0 word1"
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "api_error"


def test_no_router_to_answer_raises_overloaded_error(embedded):
    client, catalog = embedded
    _route_to(catalog["router"], None)
    with pytest.raises(anthropic.OverloadedError) as info:
        _say(client)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"
