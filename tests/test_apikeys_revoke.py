"""Revoking: a confirmation step on the page, the API, and the very next request fails."""

from __future__ import annotations

import pytest

from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import apikey_authenticate, apikey_revoke
from core.errors import InvalidApiKey


def _revoked_events(key) -> int:
    return ApiKeyEvent.objects.filter(key=key, kind="revoked").count()


def test_revoke_rewrites_the_cached_entry_so_the_next_call_fails(
    alice_key, django_capture_on_commit_callbacks
):
    key, raw = alice_key
    apikey_authenticate(raw_key=raw)  # the entry is now cached, not revoked
    apikey_authenticate(raw_key=raw)

    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor_label="test")

    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_revoking_twice_records_one_event(alice_key):
    key, _ = alice_key
    apikey_revoke(key=key, actor_label="test")
    first = ApiKey.objects.get(pk=key.pk).revoked_at

    apikey_revoke(key=key, actor_label="test")

    assert ApiKey.objects.get(pk=key.pk).revoked_at == first
    assert _revoked_events(key) == 1


def test_page_asks_for_confirmation_first(client, alice, alice_key):
    key, _ = alice_key
    client.force_login(alice)

    page = client.get(f"/keys/{key.pk}/revoke")

    assert page.status_code == 200
    html = page.content.decode()
    assert key.display_prefix in html
    assert 'name="confirm"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_page_post_without_the_checkbox_revokes_nothing(client, alice, alice_key):
    key, _ = alice_key
    client.force_login(alice)

    response = client.post(f"/keys/{key.pk}/revoke", {})

    assert response.status_code == 400
    assert "Tick the box to confirm." in response.content.decode()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_page_post_with_confirmation_revokes_and_the_key_stops_working(
    client, alice, alice_key, django_capture_on_commit_callbacks
):
    key, raw = alice_key
    apikey_authenticate(raw_key=raw)
    client.force_login(alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/keys/{key.pk}/revoke", {"confirm": "on"}, follow=True)

    assert response.redirect_chain == [("/keys", 302)]
    assert "is revoked" in response.content.decode()
    assert 'class="badge error">revoked<' in response.content.decode()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_page_revoke_needs_a_csrf_token(alice, alice_key):
    from django.test import Client

    key, _ = alice_key
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(f"/keys/{key.pk}/revoke", {"confirm": "on"})

    assert response.status_code == 403
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_revoke_page_of_a_revoked_key_says_so(client, alice, alice_key):
    key, _ = alice_key
    apikey_revoke(key=key, actor=alice)
    client.force_login(alice)

    response = client.get(f"/keys/{key.pk}/revoke", follow=True)

    assert response.redirect_chain == [("/keys", 302)]
    assert "already revoked" in response.content.decode()


@pytest.mark.parametrize("method", ["post_revoke", "delete"])
def test_api_revokes_and_answers_the_key_object(
    client, alice, alice_key, method, django_capture_on_commit_callbacks
):
    key, raw = alice_key
    apikey_authenticate(raw_key=raw)
    client.force_login(alice)

    with django_capture_on_commit_callbacks(execute=True):
        if method == "delete":
            response = client.delete(f"/api/keys/{key.pk}")
        else:
            response = client.post(f"/api/keys/{key.pk}/revoke")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == key.pk
    assert body["status"] == "revoked"
    assert body["revoked_at"] is not None
    assert _revoked_events(key) == 1
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_api_revoke_needs_a_csrf_token(alice, alice_key):
    from rest_framework.test import APIClient

    key, _ = alice_key
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(f"/api/keys/{key.pk}/revoke")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
