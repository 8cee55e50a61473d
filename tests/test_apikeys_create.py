"""Creating a key: the secret is shown exactly once and only its HMAC is stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from django.conf import settings
from django.contrib.sessions.models import Session

from apikeys import keyformat
from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import apikey_create


def _row_values(key: ApiKey) -> str:
    """Every column of the key's row and of its events, as one string."""
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    events = list(ApiKeyEvent.objects.filter(key=key).values())
    return json.dumps([row, events], default=str)


def _shown_secret(html: str) -> str:
    return re.search(r'<div class="secret" id="new-key">([^<]+)</div>', html).group(1)


def _secret_part(raw: str) -> str:
    # Not rsplit("_"): the secret's own alphabet contains "_".
    return raw[len(keyformat.KEY_PREFIX) + keyformat.PUBLIC_ID_LENGTH + 1 :]


def test_service_returns_a_well_formed_key_and_stores_only_its_hmac(alice):
    key, raw = apikey_create(owner=alice, name="laptop")

    assert keyformat.parse_key(raw) == key.public_id
    assert raw.startswith(f"ctsk_{key.public_id}_")
    expected = hmac.new(
        settings.APIKEY_HASH_SECRET.encode(), raw.encode(), hashlib.sha256
    ).hexdigest()
    assert key.secret_hash == expected
    stored = _row_values(key)
    assert raw not in stored
    assert _secret_part(raw) not in stored
    assert key.secret_hash in stored  # the check above looked at the right row


def test_two_keys_never_share_a_public_id_or_secret(alice):
    (k1, raw1), (k2, raw2) = (apikey_create(owner=alice, name=n) for n in ("a", "b"))
    assert k1.public_id != k2.public_id
    assert _secret_part(raw1) != _secret_part(raw2)


def test_page_shows_the_secret_once_with_a_copy_button(client, alice):
    client.force_login(alice)
    response = client.post("/keys", {"name": "ci runner", "nonce": "n-1"})

    assert response.status_code == 200
    html = response.content.decode()
    key = ApiKey.objects.get(owner=alice)
    raw = _shown_secret(html)
    assert keyformat.parse_key(raw) == key.public_id
    assert keyformat.key_matches(raw, key.secret_hash, key.hash_version)
    assert html.count(raw) == 1
    assert '<button type="button" data-copy="#new-key">Copy</button>' in html
    assert "no-store" in response["Cache-Control"]
    assert raw not in _row_values(key)


def test_secret_is_not_in_the_session_nor_shown_on_reload(client, alice):
    client.force_login(alice)
    response = client.post("/keys", {"name": "ci runner", "nonce": "n-1"})
    raw = _shown_secret(response.content.decode())

    reload = client.get("/keys")
    assert reload.status_code == 200
    assert raw not in reload.content.decode()
    assert _secret_part(raw) not in reload.content.decode()
    assert 'id="new-key"' not in reload.content.decode()
    for session in Session.objects.all():
        assert _secret_part(raw) not in json.dumps(session.get_decoded(), default=str)
    assert _secret_part(raw) not in json.dumps(dict(client.session), default=str)


def test_resending_the_same_form_makes_no_second_key_and_shows_no_secret(client, alice):
    client.force_login(alice)
    client.post("/keys", {"name": "ci runner", "nonce": "n-1"})

    again = client.post("/keys", {"name": "ci runner", "nonce": "n-1"}, follow=True)

    assert ApiKey.objects.filter(owner=alice).count() == 1
    html = again.content.decode()
    assert 'id="new-key"' not in html
    assert "shown only once" in html


def test_api_answers_the_secret_in_the_create_response_only(client, alice):
    client.force_login(alice)
    created = client.post("/api/keys", {"name": "server"}, content_type="application/json")

    assert created.status_code == 201
    body = created.json()
    raw = body["key"]
    key = ApiKey.objects.get(owner=alice)
    assert body["id"] == key.pk
    assert body["prefix"] == f"ctsk_{key.public_id}…"
    assert body["status"] == "active"
    assert keyformat.key_matches(raw, key.secret_hash, key.hash_version)
    assert "secret_hash" not in body and key.secret_hash not in created.content.decode()
    assert created["Cache-Control"] == "no-store"

    for url in ("/api/keys", f"/api/keys/{key.pk}"):
        later = client.get(url)
        assert later.status_code == 200
        assert _secret_part(raw) not in later.content.decode()
        assert '"key"' not in later.content.decode()
    assert raw not in _row_values(key)
