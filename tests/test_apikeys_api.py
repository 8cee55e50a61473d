"""The key management API (/api/keys) for the logged-in user: shapes and errors."""

from __future__ import annotations

import pytest

from apikeys.models import ApiKey


@pytest.fixture
def models_(db):
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="keys-api")
    CatalogModel.objects.create(public_id="cortensor/llama-3.1-8b", pool=pool)
    CatalogModel.objects.create(public_id="cortensor/qwen-2.5-7b", pool=pool)
    CatalogModel.objects.create(public_id="cortensor/retired-1", pool=pool, enabled=False)


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def post(client, body, **extra):
    return client.post("/api/keys", body, content_type="application/json", **extra)


def test_list_answers_the_callers_keys_newest_first(as_alice, alice, make_key):
    first, _ = make_key(alice, "first")
    second, _ = make_key(alice, "second")

    body = as_alice.get("/api/keys").json()

    assert body["object"] == "list"
    assert [item["id"] for item in body["data"]] == [second.pk, first.pk]
    item = body["data"][0]
    assert set(item) == {
        "id", "object", "name", "prefix", "public_id", "status", "created_at", "last_used_at",
        "expires_at", "revoked_at", "models", "requests_per_minute", "tokens_per_minute",
        "requests_per_day", "tokens_per_day", "requests_per_month", "tokens_per_month",
        "rotated_at", "previous_secret_valid_until",
    }  # fmt: skip
    assert item["object"] == "api_key"
    assert item["prefix"] == f"ctsk_{second.public_id}…"


def test_create_with_every_option(as_alice, alice, models_):
    response = post(as_alice, {
        "name": "batch", "expires_at": "2999-01-01T00:00:00Z",
        "models": ["cortensor/qwen-2.5-7b", "cortensor/llama-3.1-8b"],
        "requests_per_minute": 30, "tokens_per_minute": 5000,
    })  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    assert body["models"] == ["cortensor/llama-3.1-8b", "cortensor/qwen-2.5-7b"]
    assert body["expires_at"].startswith("2999-01-01T00:00:00")
    assert (body["requests_per_minute"], body["tokens_per_minute"]) == (30, 5000)
    key = ApiKey.objects.get(owner=alice)
    assert key.requests_per_minute == 30
    assert key.allowed_models.count() == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "k", "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "k", "models": "cortensor/llama-3.1-8b"}, "models"),
        ({"name": "k", "models": ["cortensor/nope"]}, "models"),
        ({"name": "k", "models": ["cortensor/retired-1"]}, "models"),
        ({"name": "k", "requests_per_minute": 0}, "requests_per_minute"),
        ({"name": "k", "tokens_per_minute": "lots"}, "tokens_per_minute"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(as_alice, alice, models_, body, param):
    response = post(as_alice, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert not ApiKey.objects.filter(owner=alice).exists()


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"a string"'])
def test_a_body_that_is_not_an_object_is_a_400(as_alice, alice, raw):
    response = as_alice.post("/api/keys", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_form_encoded_bodies_are_refused_clearly(as_alice):
    response = as_alice.post("/api/keys", {"name": "x"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_unauthenticated_calls_get_the_error_shape(client, db):
    response = client.get("/api/keys")

    assert response.status_code in (401, 403)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_create_needs_a_csrf_token(alice):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/api/keys", {"name": "x"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_create_works_with_the_csrf_token(alice):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/keys")  # sets the csrftoken cookie, as the page does for its scripts
    token = client.cookies["csrftoken"].value

    response = client.post("/api/keys", {"name": "x"}, format="json", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 201


def test_api_key_auth_is_not_accepted_for_key_management(client, alice_key):
    """A leaked API key must not be able to mint or revoke keys."""
    key, raw = alice_key

    listing = client.get("/api/keys", HTTP_AUTHORIZATION=f"Bearer {raw}")
    revoke = client.post(f"/api/keys/{key.pk}/revoke", HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert listing.status_code in (401, 403)
    assert revoke.status_code in (401, 403)
    key.refresh_from_db()
    assert key.revoked_at is None
