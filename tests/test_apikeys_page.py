"""The /keys page: what a customer sees of their keys, and creating one from it."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from apikeys.models import ApiKey


@pytest.fixture
def models_(db):
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="keys-page")
    return {
        "llama": CatalogModel.objects.create(public_id="cortensor/llama-3.1-8b", pool=pool),
        "qwen": CatalogModel.objects.create(public_id="cortensor/qwen-2.5-7b", pool=pool),
        "retired": CatalogModel.objects.create(
            public_id="cortensor/retired-1", pool=pool, enabled=False
        ),
    }


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def _row(html: str, key: ApiKey) -> str:
    start = html.index(f'id="key-{key.pk}"')
    return html[start : html.index("</tr>", start)]


def test_an_empty_page_invites_a_first_key(as_alice):
    html = as_alice.get("/keys").content.decode()

    assert "No keys yet." in html
    assert '<table class="data">' not in html
    assert 'name="name"' in html


def test_each_key_shows_name_prefix_dates_status_and_models(as_alice, alice, make_key, models_):
    expires = timezone.now() + timedelta(days=3)
    key, _ = make_key(alice, "prod server", expires_at=expires, allowed_models=[models_["qwen"]])
    everything, _ = make_key(alice, "anything")

    html = as_alice.get("/keys").content.decode()

    row = _row(html, key)
    assert "prod server" in row
    assert f"<code>ctsk_{key.public_id}…</code>" in row
    assert key.created_at.strftime("%Y-%m-%d") in row
    assert expires.strftime("%Y-%m-%d %H:%M") in row
    assert "never" in row  # not used yet
    assert 'class="badge ok">active<' in row
    assert "cortensor/qwen-2.5-7b" in row and "llama" not in row
    assert f'href="/keys/{key.pk}/revoke"' in row
    assert "all allowed by your plan" in _row(html, everything)


def test_revoked_keys_have_no_revoke_button(as_alice, alice, make_key):
    from apikeys.services import apikey_revoke

    key, _ = make_key(alice, "old")
    apikey_revoke(key=key, actor=alice)

    row = _row(as_alice.get("/keys").content.decode(), key)

    assert 'class="badge error">revoked<' in row
    assert "/revoke" not in row


def test_create_offers_only_enabled_models_and_stores_the_subset(as_alice, alice, models_):
    form = as_alice.get("/keys").content.decode()
    assert 'value="cortensor/llama-3.1-8b"' in form
    assert "cortensor/retired-1" not in form

    response = as_alice.post(
        "/keys", {"name": "narrow", "models": ["cortensor/llama-3.1-8b"], "nonce": "n-m"}
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(owner=alice)
    assert [m.public_id for m in key.allowed_models.all()] == ["cortensor/llama-3.1-8b"]


def test_a_disabled_model_cannot_be_posted(as_alice, alice, models_):
    response = as_alice.post(
        "/keys", {"name": "sneaky", "models": ["cortensor/retired-1"], "nonce": "n-r"}
    )

    assert response.status_code == 400
    assert not ApiKey.objects.filter(owner=alice).exists()


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_bad_name_is_explained_and_nothing_is_made(as_alice, alice, name):
    response = as_alice.post("/keys", {"name": name, "nonce": "n-bad"})

    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_a_rejected_form_can_be_sent_again_once_fixed(as_alice, alice):
    as_alice.post("/keys", {"name": "", "nonce": "n-fix"})

    response = as_alice.post("/keys", {"name": "fixed", "nonce": "n-fix"})

    assert response.status_code == 200
    assert ApiKey.objects.filter(owner=alice, name="fixed").exists()


def test_each_fresh_form_carries_a_new_nonce(as_alice):
    import re

    def nonce():
        html = as_alice.get("/keys").content.decode()
        return re.search(r'name="nonce" value="([^"]+)"', html).group(1)

    assert nonce() != nonce()


def test_the_page_is_not_cached_and_forms_are_csrf_protected(as_alice):
    response = as_alice.get("/keys")

    assert "no-store" in response["Cache-Control"]
    assert 'name="csrfmiddlewaretoken"' in response.content.decode()


def test_create_needs_a_csrf_token(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post("/keys", {"name": "x", "nonce": "n"}).status_code == 403
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_other_methods_are_refused(as_alice):
    assert as_alice.put("/keys").status_code == 405


@pytest.mark.django_db
def test_key_creation_form_is_rate_limited(client, alice, monkeypatch):
    """django-ratelimit guards the portal's forms: a script hammering /keys gets 429."""
    # The limiter's clock stands still: its minute windows are fixed, and one that ended
    # during the 22 posts (seconds on a busy machine) reset the count and let them all in.
    import django_ratelimit.core

    now = time.time()
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: now))
    client.force_login(alice)
    statuses = [client.post("/keys", {"name": f"k{i}"}).status_code for i in range(22)]
    assert 429 in statuses
    assert statuses.index(429) >= 20
