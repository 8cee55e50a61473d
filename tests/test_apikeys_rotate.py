"""Rotating a key (POST /api/keys/<id>/rotate, `manage.py apikey_rotate`): a new secret for
the same key (id, name, budgets and usage history kept), shown once; the old secret works until
the grace ends, then answers 401 saying so; audited, and `key_rotated` is sent after commit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import apikey_authenticate
from apikeys.signals import key_rotated
from core.errors import InvalidApiKey


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def rotate(client, key, body=None):
    return client.post(f"/api/keys/{key.pk}/rotate", body or {}, content_type="application/json")


@pytest.fixture
def rotated_signals():
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs))

    key_rotated.connect(receiver)
    yield received
    key_rotated.disconnect(receiver)


def test_rotation_issues_a_new_secret_for_the_same_key_and_keeps_the_old_one_for_a_day(
    as_alice, alice, make_key, django_capture_on_commit_callbacks, rotated_signals
):
    key, old = make_key(alice, "prod", requests_per_day=25)
    apikey_authenticate(raw_key=old)

    with django_capture_on_commit_callbacks(execute=True):
        response = rotate(as_alice, key)

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    new = body["key"]
    assert new != old and new.startswith(f"ctsk_{key.public_id}_")
    assert (body["id"], body["name"], body["requests_per_day"]) == (key.pk, "prod", 25)
    until = timezone.now() + timedelta(seconds=86_400)
    key.refresh_from_db()
    assert abs((key.previous_valid_until - until).total_seconds()) < 60
    assert body["previous_secret_valid_until"] is not None
    # Both secrets work during the grace, as the same key.
    assert apikey_authenticate(raw_key=new).key_id == key.pk
    assert apikey_authenticate(raw_key=old).key_id == key.pk
    # The new secret is nowhere in the database; the key's record, audit and signal are.
    assert ApiKey.objects.filter(secret_hash__contains=new).count() == 0
    event = ApiKeyEvent.objects.get(key=key, kind="rotated")
    assert (event.actor_id, event.changes["grace_seconds"]) == (alice.pk, 86_400)
    [(sender, kwargs)] = rotated_signals
    assert (sender, kwargs["key"].pk, kwargs["actor"]) == (ApiKey, key.pk, alice)
    assert kwargs["grace_until"] == key.previous_valid_until


def test_grace_zero_ends_the_old_secret_at_once(
    as_alice, alice_key, django_capture_on_commit_callbacks
):
    key, old = alice_key
    apikey_authenticate(raw_key=old)

    with django_capture_on_commit_callbacks(execute=True):
        body = rotate(as_alice, key, {"grace_seconds": 0}).json()

    assert body["previous_secret_valid_until"] is None
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=old)
    assert apikey_authenticate(raw_key=body["key"]).key_id == key.pk


def test_after_the_grace_the_old_secret_is_told_it_was_rotated(
    as_alice, alice_key, django_capture_on_commit_callbacks
):
    key, old = alice_key
    with django_capture_on_commit_callbacks(execute=True):
        new = rotate(as_alice, key, {"grace_seconds": 60}).json()["key"]
    # The grace ends (moved into the past, as time would); the entry is rewritten on save.
    with django_capture_on_commit_callbacks(execute=True):
        ApiKey.objects.filter(pk=key.pk).update(
            previous_valid_until=timezone.now() - timedelta(seconds=1)
        )
        ApiKey.objects.get(pk=key.pk).save()

    with pytest.raises(InvalidApiKey) as refused:
        apikey_authenticate(raw_key=old)
    assert "rotated" in refused.value.message
    assert apikey_authenticate(raw_key=new).key_id == key.pk
    # Through the API the same: a 401 in OpenAI's shape.
    response = as_alice.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {old}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_rotating_again_within_the_grace_ends_the_oldest_secret(
    as_alice, alice_key, django_capture_on_commit_callbacks
):
    key, first = alice_key
    with django_capture_on_commit_callbacks(execute=True):
        second = rotate(as_alice, key).json()["key"]
    with django_capture_on_commit_callbacks(execute=True):
        third = rotate(as_alice, key).json()["key"]
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=first)
    assert apikey_authenticate(raw_key=second).key_id == key.pk
    assert apikey_authenticate(raw_key=third).key_id == key.pk


@pytest.mark.parametrize("grace", [-1, 30 * 86_400 + 1, "soon", None, True])
def test_a_bad_grace_is_400(as_alice, alice_key, grace):
    key, _ = alice_key
    response = rotate(as_alice, key, {"grace_seconds": grace})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "grace_seconds"
    key.refresh_from_db()
    assert key.rotated_at is None


def test_a_revoked_key_cannot_be_rotated(as_alice, alice_key):
    key, _ = alice_key
    as_alice.post(f"/api/keys/{key.pk}/revoke")
    response = rotate(as_alice, key)
    assert response.status_code == 400
    assert "revoked" in response.json()["error"]["message"]


def test_the_command_rotates_and_prints_only_the_secret(
    alice_key, capsys, django_capture_on_commit_callbacks
):
    key, old = alice_key
    with django_capture_on_commit_callbacks(execute=True):
        call_command("apikey_rotate", "--key", key.display_prefix, "--grace-seconds", "0")
    out, err = capsys.readouterr()
    new = out.strip()
    assert apikey_authenticate(raw_key=new).key_id == key.pk
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=old)
    assert "stopped working now" in err
    assert ApiKeyEvent.objects.get(key=key, kind="rotated").actor_label == "manage.py apikey_rotate"


def test_revoking_sends_key_revoked_after_commit(
    as_alice, alice, alice_key, django_capture_on_commit_callbacks
):
    from apikeys.signals import key_revoked

    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs["key"].pk, kwargs["actor"]))

    key_revoked.connect(receiver)
    try:
        key, _ = alice_key
        with django_capture_on_commit_callbacks(execute=True):
            as_alice.post(f"/api/keys/{key.pk}/revoke")
        with django_capture_on_commit_callbacks(execute=True):
            as_alice.post(f"/api/keys/{key.pk}/revoke")  # already revoked: nothing new
    finally:
        key_revoked.disconnect(receiver)
    assert received == [(ApiKey, key.pk, alice)]
