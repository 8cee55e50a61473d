"""The official `openai` SDK pointed at the portal works unchanged: the portal as production
serves it (gunicorn, gevent workers, the lean /v1/ stack: tests/servehelpers.py), a real
router simulator over HTTP."""

from __future__ import annotations

import openai
import pytest

from tests.routersim import RouterSim
from tests.servehelpers import Gunicorn, enabled_models, provision

pytestmark = pytest.mark.slow

MODELS = (("cortensor/llama-3.1-8b", "llama3"), ("cortensor/qwen-2.5-7b", "chatml"))


@pytest.fixture(scope="module")
def served():
    sim = RouterSim("--sessions", "1,2")
    database_url, key = provision(sim, email="sdk@example.com", models=MODELS)
    server = Gunicorn(database_url=database_url)
    yield server.url, key, database_url
    server.stop()
    sim.stop()


@pytest.fixture
def client(served):
    url, key, _ = served
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_models_list_shows_the_enabled_catalog(client, served):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == enabled_models(served[2])  # other modules' models too, when they ran first
    assert {"cortensor/llama-3.1-8b", "cortensor/qwen-2.5-7b"} <= set(ids)
    assert models.data[0].object == "model"
    assert client.models.retrieve("cortensor/qwen-2.5-7b").id == "cortensor/qwen-2.5-7b"


def test_chat_completion(client):
    answer = client.chat.completions.create(
        model="cortensor/llama-3.1-8b",
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=5,
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == " word0 word1 word2 word3 word4"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 5
    assert answer.model == "cortensor/llama-3.1-8b"


def test_legacy_completion(client):
    answer = client.completions.create(
        model="cortensor/qwen-2.5-7b", prompt="Once upon", max_tokens=3
    )
    assert answer.object == "text_completion"
    assert answer.choices[0].text == " word0 word1 word2"
    assert answer.usage.completion_tokens == 3


def test_chat_stream_without_usage(client):
    stream = client.chat.completions.create(
        model="cortensor/llama-3.1-8b",
        messages=[{"role": "user", "content": "Stream"}],
        max_tokens=4,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " word0 word1 word2 word3"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_chat_stream_with_include_usage(client):
    stream = client.chat.completions.create(
        model="cortensor/llama-3.1-8b",
        messages=[{"role": "user", "content": "Stream"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 4


def test_legacy_completion_stream(client):
    stream = client.completions.create(
        model="cortensor/llama-3.1-8b", prompt="x", max_tokens=2, stream=True
    )
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == " word0 word1"


def test_bad_key_raises_authentication_error(served):
    url, _, _ = served
    bad = openai.OpenAI(base_url=url + "/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.code == "invalid_api_key"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="cortensor/nope", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


def test_bad_parameter_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="cortensor/llama-3.1-8b",
            temperature=7,
            messages=[{"role": "user", "content": "x"}],
        )
    assert info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="cortensor/llama-3.1-8b", n=2, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.param == "n"


def test_every_response_carries_a_request_id(client):
    raw = client.chat.completions.with_raw_response.create(
        model="cortensor/llama-3.1-8b", messages=[{"role": "user", "content": "x"}], max_tokens=1
    )
    assert raw.headers["x-request-id"].startswith("req_")


# --- the SDK's retries follow x-should-retry ----------------------------------------------------


@pytest.fixture(scope="module")
def limited_keys(served):
    """Keys on plans the SDK cannot get past by retrying: a tokens-per-minute limit below one
    request, and a day's quota of one request."""
    from tests.servehelpers import config_file, manage_many

    url, _, database_url = served
    plans = ("tiny-tpm", "one-a-day")
    config = {
        "plans": [
            {"name": "tiny-tpm", "tokens_per_minute": 50, "models": ["*"]},
            {"name": "one-a-day", "requests_per_day": 1, "models": ["*"]},
        ]
    }
    with config_file(config) as path:
        _, *created = manage_many(
            ["apply_config", path],
            *(
                [
                    "apikey_create",
                    "--email",
                    f"{plan}@example.com",
                    "--name",
                    plan,
                    "--plan",
                    plan,
                    "--create-user",
                ]
                for plan in plans
            ),
            database_url=database_url,
        )
    keys = {plan: key.strip() for plan, key in zip(plans, created, strict=True)}
    return url, keys


def _counting_client(url: str, key: str) -> tuple[openai.OpenAI, list]:
    sent: list = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [sent.append]})
    # The SDK's default retries (2), so a retry it should not make would show.
    return openai.OpenAI(base_url=url + "/v1", api_key=key, http_client=http, timeout=20), sent


def test_the_sdk_does_not_retry_a_request_larger_than_the_tokens_per_minute(limited_keys):
    url, keys = limited_keys
    client, sent = _counting_client(url, keys["tiny-tpm"])
    with pytest.raises(openai.RateLimitError, match="Request too large"):
        client.chat.completions.create(
            model="cortensor/llama-3.1-8b",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=64,
        )
    assert len(sent) == 1


def test_the_sdk_does_not_retry_a_spent_day_quota(limited_keys):
    url, keys = limited_keys
    client, sent = _counting_client(url, keys["one-a-day"])
    body = {
        "model": "cortensor/llama-3.1-8b",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 2,
    }
    client.chat.completions.create(**body)
    with pytest.raises(openai.RateLimitError, match="Quota reached") as spent:
        client.chat.completions.create(**body)
    assert len(sent) == 2
    # This SDK also gives up on a Retry-After over a minute; older ones and other clients
    # read the header.
    assert spent.value.response.headers["x-should-retry"] == "false"
