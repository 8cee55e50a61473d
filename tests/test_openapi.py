"""The OpenAPI schema at /openapi.json: valid, complete for /v1/, and true to what the API
answers (real responses, through the router simulator, validate against it)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

V1_OPERATIONS = {
    ("/v1/models", "get"): "models_list",
    ("/v1/models/{model_id}", "get"): "models_retrieve",
    ("/v1/chat/completions", "post"): "chat_completions_create",
    ("/v1/completions", "post"): "completions_create",
    ("/v1/usage", "get"): "usage_retrieve",
    ("/v1/messages", "post"): "messages_create",
    ("/v1/messages/count_tokens", "post"): "messages_count_tokens",
}


@pytest.fixture
def spec(client, db) -> dict:
    response = client.get("/openapi.json", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_served_as_json_at_the_documented_url(client, db):
    response = client.get("/openapi.json", HTTP_ACCEPT="*/*")

    assert response.status_code == 200
    assert "json" in response["Content-Type"], response["Content-Type"]
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_is_a_valid_openapi_document(spec):
    validate(spec)


def test_generates_without_warnings(tmp_path):
    # --fail-on-warn: an undocumented view or an unresolved authenticator breaks the build.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))


def test_every_v1_operation_is_documented_with_bearer_auth(spec):
    documented = {
        (path, method): op["operationId"]
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
    }
    assert documented == V1_OPERATIONS
    assert spec["components"]["securitySchemes"]["ApiKeyAuth"] == {
        **spec["components"]["securitySchemes"]["ApiKeyAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    for path, method in V1_OPERATIONS:
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"ApiKeyAuth": []}], path
        responses = operation["responses"]
        assert "200" in responses
        shape = "Error"  # OpenAI's; Anthropic's on its routes; either on the models'
        if path.startswith("/v1/messages"):
            shape = "AnthropicError"
        elif path.startswith("/v1/models"):
            shape = "AnyError"
        for status in ("401", "429"):
            error = responses[status]["content"]["application/json"]["schema"]
            assert error == {"$ref": f"#/components/schemas/{shape}"}, (path, status)


def test_request_bodies_carry_their_fields(spec):
    schemas = spec["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    completion = schemas["CompletionRequest"]
    assert set(chat["required"]) == {"model", "messages"}
    assert set(completion["required"]) == {"model", "prompt"}
    sampling = {
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "n",
        "stream",
        "stream_options",
    }
    assert sampling | {"messages", "max_completion_tokens", "response_format"} <= set(
        chat["properties"]
    )
    assert sampling | {"prompt", "echo", "best_of"} <= set(completion["properties"])
    assert chat["properties"]["temperature"]["maximum"] == 2
    assert chat["properties"]["messages"]["maxItems"] == 2048
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json"}
    for status in ("400", "404", "413"):
        assert status in spec["paths"]["/v1/completions"]["post"]["responses"]


# --- real answers validate against the schema ---------------------------------------------------


def _validator(
    spec: dict, path: str, method: str, status: int, media: str = "application/json"
) -> OAS30Validator:
    schema = spec["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
    # Resolve $refs against the whole document.
    return OAS30Validator({**schema, "components": spec["components"]})


def _conforms(spec, path, method, response, status):
    assert response.status_code == status, response.content[:500]
    errors = list(_validator(spec, path, method, status).iter_errors(response.json()))
    assert not errors, [e.message for e in errors]


@pytest.fixture
def auth(catalog, alice_key):
    return {"HTTP_AUTHORIZATION": f"Bearer {alice_key[1]}"}


def test_success_answers_conform(client, spec, auth):
    chat = {
        "model": "cortensor/llama-3.1-8b",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
    }
    completion = {"model": "cortensor/qwen-2.5-7b", "prompt": "Once", "max_tokens": 3}

    _conforms(spec, "/v1/models", "get", client.get("/v1/models", **auth), 200)
    _conforms(
        spec,
        "/v1/models/{model_id}",
        "get",
        client.get("/v1/models/cortensor/llama-3.1-8b", **auth),
        200,
    )
    _conforms(
        spec,
        "/v1/chat/completions",
        "post",
        client.post("/v1/chat/completions", chat, content_type="application/json", **auth),
        200,
    )
    _conforms(
        spec,
        "/v1/completions",
        "post",
        client.post("/v1/completions", completion, content_type="application/json", **auth),
        200,
    )
    _conforms(spec, "/v1/usage", "get", client.get("/v1/usage", **auth), 200)
    message = {"model": "cortensor/llama-3.1-8b", "max_tokens": 3, "messages": chat["messages"]}
    _conforms(
        spec,
        "/v1/messages",
        "post",
        client.post("/v1/messages", message, content_type="application/json", **auth),
        200,
    )
    del message["max_tokens"]
    _conforms(
        spec,
        "/v1/messages/count_tokens",
        "post",
        client.post("/v1/messages/count_tokens", message, content_type="application/json", **auth),
        200,
    )


def test_error_answers_conform(client, spec, auth):
    _conforms(spec, "/v1/models", "get", client.get("/v1/models"), 401)
    _conforms(spec, "/v1/models/{model_id}", "get", client.get("/v1/models/nope", **auth), 404)
    _conforms(
        spec,
        "/v1/chat/completions",
        "post",
        client.post("/v1/chat/completions", {"model": 1}, content_type="application/json", **auth),
        400,
    )
    _conforms(
        spec,
        "/v1/completions",
        "post",
        client.post(
            "/v1/completions",
            {"model": "nope", "prompt": "x"},
            content_type="application/json",
            **auth,
        ),
        404,
    )
    for body, status in (({"model": 1}, 400), ({"model": "x", "messages": []}, 400)):
        _conforms(
            spec,
            "/v1/messages",
            "post",
            client.post("/v1/messages", body, content_type="application/json", **auth),
            status,
        )
    _conforms(
        spec,
        "/v1/messages",
        "post",
        client.post("/v1/messages", {}, content_type="application/json"),
        401,
    )
    _conforms(
        spec,
        "/v1/messages/count_tokens",
        "post",
        client.post(
            "/v1/messages/count_tokens",
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            content_type="application/json",
            **auth,
        ),
        404,
    )


def test_anthropic_shaped_models_and_errors_conform(client, spec, auth):
    anthropic = {"HTTP_ANTHROPIC_VERSION": "2023-06-01"}
    models = client.get("/v1/models", **auth, **anthropic)
    assert "has_more" in models.json()
    _conforms(spec, "/v1/models", "get", models, 200)
    _conforms(
        spec,
        "/v1/models/{model_id}",
        "get",
        client.get("/v1/models/cortensor/llama-3.1-8b", **auth, **anthropic),
        200,
    )
    missing = client.get("/v1/models/nope", **auth, **anthropic)
    assert missing.json()["type"] == "error"
    _conforms(spec, "/v1/models/{model_id}", "get", missing, 404)
    _conforms(spec, "/v1/models", "get", client.get("/v1/models", **anthropic), 401)
    schemas = spec["components"]["schemas"]
    assert {"$ref": "#/components/schemas/AnthropicModelList"} in schemas["AnyModelList"]["oneOf"]


def test_a_broken_answer_would_not_conform(spec):
    """The validator is not vacuous: a chat completion without choices fails it."""
    validator = _validator(spec, "/v1/chat/completions", "post", 200)
    assert list(validator.iter_errors({"id": "x", "object": "chat.completion"}))
