"""Bob can never see or touch alice's keys: every key route answers 404 for her ids."""

from __future__ import annotations

import pytest

from apikeys.models import ApiKey, ApiKeyEvent


@pytest.fixture
def as_bob(client, bob):
    client.force_login(bob)
    return client


def _untouched(key: ApiKey) -> None:
    key.refresh_from_db()
    assert key.revoked_at is None
    assert not ApiKeyEvent.objects.filter(key=key, kind="revoked").exists()


def test_page_confirm_step_is_404(as_bob, alice_key):
    key, _ = alice_key
    response = as_bob.get(f"/keys/{key.pk}/revoke")
    assert response.status_code == 404
    assert key.public_id not in response.content.decode()


@pytest.mark.parametrize("path", ["/keys/{pk}", "/keys/{pk}/rotate"])
def test_key_page_and_rotate_step_are_404(as_bob, alice_key, path):
    key, _ = alice_key
    assert as_bob.get(path.format(pk=key.pk)).status_code == 404
    assert as_bob.post(path.format(pk=key.pk), {"name": "x", "grace": "0"}).status_code == 404
    key.refresh_from_db()
    assert (key.name, key.rotated_at) == ("alice's key", None)


def test_page_revoke_is_404(as_bob, alice_key):
    key, _ = alice_key
    assert as_bob.post(f"/keys/{key.pk}/revoke", {"confirm": "on"}).status_code == 404
    _untouched(key)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/keys/{pk}"),
        ("delete", "/api/keys/{pk}"),
        ("post", "/api/keys/{pk}/revoke"),
        ("patch", "/api/keys/{pk}"),
        ("post", "/api/keys/{pk}/rotate"),
    ],
)
def test_api_routes_are_404_in_the_error_shape(as_bob, alice_key, method, path):
    key, _ = alice_key

    response = getattr(as_bob, method)(
        path.format(pk=key.pk), {"name": "mine now"}, content_type="application/json"
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert key.public_id not in response.content.decode()
    _untouched(key)


def test_lists_show_only_your_own_keys(as_bob, bob, alice_key, make_key):
    alice_key_obj, _ = alice_key
    bobs, _ = make_key(bob, "bob's key")

    page = as_bob.get("/keys").content.decode()
    listed = [item["id"] for item in as_bob.get("/api/keys").json()["data"]]

    assert bobs.public_id in page
    assert alice_key_obj.public_id not in page
    assert "alice" not in page
    assert listed == [bobs.pk]


def test_an_id_that_does_not_exist_is_the_same_404(as_bob, alice_key):
    key, _ = alice_key
    missing = key.pk + 1000

    assert as_bob.get(f"/keys/{missing}/revoke").status_code == 404
    assert as_bob.get(f"/api/keys/{missing}").json() == as_bob.get(f"/api/keys/{key.pk}").json()


def test_logged_out_visitors_are_sent_to_log_in(client, alice_key):
    key, _ = alice_key
    for path in ("/keys", f"/keys/{key.pk}/revoke"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/keys"),
        ("post", "/api/keys"),
        ("get", "/api/keys/{pk}"),
        ("post", "/api/keys/{pk}/revoke"),
        ("delete", "/api/keys/{pk}"),
    ],
)
def test_logged_out_api_calls_are_refused_in_the_error_shape(client, alice_key, method, path):
    key, _ = alice_key

    response = getattr(client, method)(path.format(pk=key.pk))

    assert response.status_code in (401, 403)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    _untouched(key)
