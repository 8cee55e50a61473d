"""Operators rotate the server secrets without logging everyone out or breaking API keys
(SECURITY.md, "Rotating the server secrets")."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from apikeys import keyformat
from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate
from core.errors import InvalidApiKey

NEW_HASH_SECRET = "rotated-apikey-hash-secret-2026"


def _stored(key: ApiKey) -> tuple[str, str]:
    key.refresh_from_db()
    return key.hash_version, key.secret_hash


def test_a_key_survives_the_hash_secret_rotation_and_is_rehashed(alice_key):
    key, raw = alice_key
    old_secret = settings.APIKEY_HASH_SECRET
    old_version, old_hash = _stored(key)

    with override_settings(
        APIKEY_HASH_SECRET=NEW_HASH_SECRET, APIKEY_HASH_SECRET_FALLBACKS=[old_secret]
    ):
        new_version = keyformat.current_hash_version()
        assert new_version != old_version

        principal = apikey_authenticate(raw_key=raw, ip="198.51.100.7")

        assert principal.key_id == key.pk
        version, stored_hash = _stored(key)
        assert version == new_version
        assert stored_hash != old_hash
        assert stored_hash == keyformat.hash_key(raw)

    # Once every key in use has moved, the old secret can go: this key keeps working.
    with override_settings(APIKEY_HASH_SECRET=NEW_HASH_SECRET, APIKEY_HASH_SECRET_FALLBACKS=[]):
        assert apikey_authenticate(raw_key=raw, ip="198.51.100.7").key_id == key.pk


def test_over_http_during_the_rotation(client, catalog, alice_key):
    key, raw = alice_key
    with override_settings(
        APIKEY_HASH_SECRET=NEW_HASH_SECRET,
        APIKEY_HASH_SECRET_FALLBACKS=[settings.APIKEY_HASH_SECRET],
    ):
        response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 200
        assert _stored(key)[0] == keyformat.current_hash_version()


def test_a_key_whose_secret_is_in_no_fallback_fails(alice_key):
    _, raw = alice_key
    for fallbacks in ([], ["some-other-old-secret"]):
        with (
            override_settings(
                APIKEY_HASH_SECRET=NEW_HASH_SECRET, APIKEY_HASH_SECRET_FALLBACKS=fallbacks
            ),
            pytest.raises(InvalidApiKey),
        ):
            apikey_authenticate(raw_key=raw, ip="198.51.100.8")


def test_keys_made_after_the_rotation_use_the_new_secret(alice, make_key):
    with override_settings(
        APIKEY_HASH_SECRET=NEW_HASH_SECRET,
        APIKEY_HASH_SECRET_FALLBACKS=[settings.APIKEY_HASH_SECRET],
    ):
        key, raw = make_key(alice, "after")
        assert _stored(key) == (keyformat.current_hash_version(), keyformat.hash_key(raw))


def test_sessions_survive_the_secret_key_rotation_with_a_fallback(client, alice):
    client.force_login(alice)
    assert client.get("/keys").status_code == 200
    old = settings.SECRET_KEY

    new = "rotated-django-secret-key-" + "x" * 40

    with override_settings(SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old]):
        assert client.get("/keys").status_code == 200  # still logged in
    # That request moved the session to the new key: the fallback can go later.
    with override_settings(SECRET_KEY=new, SECRET_KEY_FALLBACKS=[]):
        assert client.get("/keys").status_code == 200


def test_without_the_fallback_sessions_end(client, alice):
    """What the fallback prevents: every customer logged out at once."""
    client.force_login(alice)
    with override_settings(
        SECRET_KEY="rotated-django-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[]
    ):
        response = client.get("/keys")
        assert response.status_code == 302
        assert response["Location"].startswith(settings.LOGIN_URL)


# --- the two phases of a hash-secret rotation, with processes on different phases ------------
#
# Each `with` block is a process on one configuration; they share the database and the cache,
# as the web processes of a rolling deploy do.


def _phase0(old: str):
    """Before the rotation."""
    return override_settings(
        APIKEY_HASH_SECRET=old, APIKEY_HASH_SECRET_NEXT="", APIKEY_HASH_SECRET_FALLBACKS=[]
    )


def _phase1(old: str):
    """The new secret verifies, hashes nothing."""
    return override_settings(
        APIKEY_HASH_SECRET=old,
        APIKEY_HASH_SECRET_NEXT=NEW_HASH_SECRET,
        APIKEY_HASH_SECRET_FALLBACKS=[],
    )


def _phase2(old: str):
    """The new secret hashes; the old one verifies."""
    return override_settings(
        APIKEY_HASH_SECRET=NEW_HASH_SECRET,
        APIKEY_HASH_SECRET_NEXT="",
        APIKEY_HASH_SECRET_FALLBACKS=[old],
    )


def _version_of(secret: str) -> str:
    with override_settings(APIKEY_HASH_SECRET=secret):
        return keyformat.current_hash_version()


def test_phase_one_changes_nothing_stored(alice_key):
    key, raw = alice_key
    old = settings.APIKEY_HASH_SECRET
    before = _stored(key)

    with _phase1(old):
        assert apikey_authenticate(raw_key=raw).key_id == key.pk

    assert _stored(key) == before


def test_rolling_into_phase_two_breaks_no_process_still_in_phase_one(alice_key, make_key, alice):
    key, raw = alice_key
    old = settings.APIKEY_HASH_SECRET

    with _phase2(old):  # the first restarted process moves the key to the new secret
        assert apikey_authenticate(raw_key=raw).key_id == key.pk
        made_in_phase2, raw_made_in_phase2 = make_key(alice, "made in phase 2")
    assert _stored(key)[0] == _version_of(NEW_HASH_SECRET)

    with _phase1(old):  # a process not restarted yet
        assert apikey_authenticate(raw_key=raw).key_id == key.pk
        assert apikey_authenticate(raw_key=raw_made_in_phase2).key_id == made_in_phase2.pk
    # ... and it did not move the key back: no flip-flop between the two configurations.
    assert _stored(key)[0] == _version_of(NEW_HASH_SECRET)


def test_rolling_back_from_phase_two_to_phase_one_keeps_every_key(alice_key, make_key, alice):
    key, raw = alice_key
    old = settings.APIKEY_HASH_SECRET
    with _phase2(old):
        apikey_authenticate(raw_key=raw)  # moved to the new secret
        made, raw_made = make_key(alice, "made in phase 2")

    with _phase1(old):  # the rollback
        for _ in range(2):
            assert apikey_authenticate(raw_key=raw).key_id == key.pk
            assert apikey_authenticate(raw_key=raw_made).key_id == made.pk
        made_after, raw_made_after = make_key(alice, "made after the rollback")

    with _phase2(old):  # and forward again
        assert apikey_authenticate(raw_key=raw_made_after).key_id == made_after.pk


def test_skipping_phase_one_is_what_breaks(alice_key):
    """Why phase 1 exists: a process that does not know the new secret yet refuses a key that
    a phase-2 process has moved."""
    _, raw = alice_key
    old = settings.APIKEY_HASH_SECRET
    with _phase2(old):
        apikey_authenticate(raw_key=raw)

    with _phase0(old), pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)
