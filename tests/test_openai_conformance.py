"""Every answer validates against OpenAI's own published schemas, not ours.

`tests/specs/openai-openapi.json` is OpenAI's OpenAPI spec (openai/openai-openapi), cut to the
operations we serve and the schemas they reach (`tests/specs/trim_openai_spec.py`). The spec
mixes OpenAPI 3.0's `nullable: true` into 3.1 schemas; it is honoured here (a nullable schema
also takes null), so a `null` where the spec says "string" fails. The spec's own example
requests (`x-oaiMeta.examples`) are replayed: each gets a valid answer, or a 400 that names the
parameter we do not serve.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

pytestmark = pytest.mark.django_db

SPEC_PATH = Path(__file__).parent / "specs" / "openai-openapi.json"
MODEL = "cortensor/llama-3.1-8b"


def _honour_nullable(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema: the schema, or null."""
    if isinstance(node, list):
        return [_honour_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _honour_nullable(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def _spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@cache
def _validator(name: str) -> Draft202012Validator:
    components = _honour_nullable(copy.deepcopy(_spec()["components"]))
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    return Draft202012Validator(schema)


def assert_valid(name: str, instance) -> None:
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
    )


def _sse_chunks(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    events = [line[6:] for line in body.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def _post(client, raw, path, body):
    return client.post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )


def _chat(**more):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], **more}


# --- our answers ----------------------------------------------------------------------------


def test_models_list_and_model(client, catalog, alice_key):
    _, raw = alice_key
    listing = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert listing.status_code == 200
    assert_valid("ListModelsResponse", listing.json())
    one = client.get(f"/v1/models/{MODEL}", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert one.status_code == 200
    assert_valid("Model", one.json())


def test_chat_completion(client, catalog, alice_key):
    _, raw = alice_key
    answer = _post(client, raw, "/v1/chat/completions", _chat(max_tokens=4))
    assert answer.status_code == 200
    assert_valid("CreateChatCompletionResponse", answer.json())
    assert "system_fingerprint" not in answer.json()  # a string or absent, never null


def test_chat_stream_chunks_include_usage_too(client, catalog, alice_key):
    _, raw = alice_key
    stream = _post(
        client,
        raw,
        "/v1/chat/completions",
        _chat(max_tokens=4, stream=True, stream_options={"include_usage": True}),
    )
    chunks = _sse_chunks(stream)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
        assert chunk.get("system_fingerprint", "") is not None


def test_legacy_completion_and_its_stream(client, catalog, alice_key):
    _, raw = alice_key
    body = {"model": MODEL, "prompt": "Say this is a test", "max_tokens": 4}
    answer = _post(client, raw, "/v1/completions", body)
    assert answer.status_code == 200
    assert_valid("CreateCompletionResponse", answer.json())

    stream = _post(
        client,
        raw,
        "/v1/completions",
        {**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    chunks = _sse_chunks(stream)
    assert chunks[-1]["choices"] == []
    for chunk in chunks:
        # The spec gives the stream this very shape, but its finish_reason is a non-null enum
        # that no chunk before the last can have: OpenAI's own streams send null there, and so
        # do we. Everything else is checked as written.
        for choice in chunk["choices"]:
            if choice["finish_reason"] is None:
                choice["finish_reason"] = "stop"
        assert_valid("CreateCompletionResponse", chunk)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_stream_that_breaks_off_ends_with_a_valid_error_chunk(client, alice_key, path):
    from catalog.models import CatalogModel, Router, RouterPool
    from tests.routersim import RouterSim

    _, raw = alice_key
    with RouterSim("--drop-after", "2", "--chunks", "6") as sim:
        pool = RouterPool.objects.create(name="dropping")
        Router.objects.create(pool=pool, base_url=sim.url, session_id=1, token="default-dev-token")
        CatalogModel.objects.create(public_id="cortensor/dropping", pool=pool, max_tokens=64)
        body = {"model": "cortensor/dropping", "stream": True, "max_tokens": 6}
        if path == "/v1/chat/completions":
            body["messages"] = [{"role": "user", "content": "x"}]
            name = "CreateChatCompletionStreamResponse"
        else:
            body["prompt"] = "x"
            name = "CreateCompletionResponse"
        chunks = _sse_chunks(_post(client, raw, path, body))
    assert chunks[-1]["error"]["code"] == "upstream_error"
    for chunk in chunks:
        for choice in chunk["choices"]:
            if name == "CreateCompletionResponse" and choice["finish_reason"] is None:
                choice["finish_reason"] = "stop"  # see the legacy stream test
        assert_valid(name, chunk)


@pytest.mark.parametrize(
    "request_kwargs,status",
    [
        ({"path": "/v1/models", "auth": False}, 401),
        ({"path": "/v1/models/cortensor/none"}, 404),
        ({"path": "/v1/chat/completions", "body": _chat(temperature=5)}, 400),
        ({"path": "/v1/chat/completions", "body": _chat(n=2)}, 400),
        ({"path": "/v1/completions", "body": {"model": MODEL}}, 400),
    ],
)
def test_errors(client, catalog, alice_key, request_kwargs, status):
    _, raw = alice_key
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"} if request_kwargs.get("auth", True) else {}
    if "body" in request_kwargs:
        response = client.post(
            request_kwargs["path"],
            json.dumps(request_kwargs["body"]),
            content_type="application/json",
            **headers,
        )
    else:
        response = client.get(request_kwargs["path"], **headers)
    assert response.status_code == status
    assert_valid("ErrorResponse", response.json())


def test_a_rate_limit_error_too(client, catalog, alice, make_key):
    _, raw = make_key(alice, "one a minute", requests_per_minute=1)
    _post(client, raw, "/v1/chat/completions", _chat(max_tokens=2))
    limited = _post(client, raw, "/v1/chat/completions", _chat(max_tokens=2))
    assert limited.status_code == 429
    assert_valid("ErrorResponse", limited.json())


def test_a_null_where_the_spec_says_string_fails_here():
    """The check can fail: the null system_fingerprint we used to send is refused."""
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    with pytest.raises(AssertionError, match="system_fingerprint"):
        assert_valid("CreateChatCompletionResponse", answer)
    del answer["system_fingerprint"]
    assert_valid("CreateChatCompletionResponse", answer)


# --- the spec's own example requests ------------------------------------------------------------

_SERVED = {"/chat/completions": "CreateChatCompletion", "/completions": "CreateCompletion"}


def _examples() -> list[tuple[str, str, dict]]:
    found = []
    for path in _SERVED:
        examples = _spec()["paths"][path]["post"]["x-oaiMeta"]["examples"]
        for example in examples if isinstance(examples, list) else [examples]:
            curl = example["request"]["curl"]
            match = re.search(r"-d '(.*?)'\s*$", curl, re.S)
            assert match, f"no body in {example['title']}"
            body = json.loads(match.group(1))
            found.append((path, example.get("title", "example"), body))
    return found


EXAMPLES = _examples()


@pytest.mark.parametrize("path,title,body", EXAMPLES, ids=[f"{p}:{t}" for p, t, _ in EXAMPLES])
def test_the_specs_example_requests(client, catalog, alice_key, path, title, body):
    _, raw = alice_key
    body = {**body, "model": MODEL}
    response = _post(client, raw, f"/v1{path}", body)
    if response.status_code == 200:
        if body.get("stream"):
            name = f"{_SERVED[path]}StreamResponse" if path == "/chat/completions" else None
            for chunk in _sse_chunks(response):
                for choice in chunk["choices"]:
                    if name is None and choice["finish_reason"] is None:
                        choice["finish_reason"] = "stop"  # see the legacy stream test
                assert_valid(name or "CreateCompletionResponse", chunk)
        else:
            assert_valid(f"{_SERVED[path]}Response", response.json())
        return
    # What the routers cannot do is refused by name, never ignored.
    assert response.status_code == 400, response.content
    error = response.json()
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "unsupported_parameter"
    assert error["error"]["param"]


def test_the_examples_cover_what_we_serve_and_what_we_refuse():
    titles = {title for _, title, _ in EXAMPLES}
    assert {"Default", "Streaming", "No streaming"} <= titles
    assert len(EXAMPLES) >= 6
