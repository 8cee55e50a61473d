"""Key-cache refreshes are versioned: a refresh that read the row before a change cannot
write its stale entry after the change's own refresh, whatever the interleaving.

Each test plays one interleaving step by step with the same functions a refresh is made of
(take a ticket, read the row, store), so the order is fixed, not left to timing.
"""

from __future__ import annotations

import pytest

from apikeys import cache as key_cache
from apikeys import services
from apikeys.services import apikey_authenticate, apikey_revoke, apikey_update
from core.errors import InvalidApiKey

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_login_refresh_racing_a_revocation_cannot_bring_the_key_back(alice, make_key):
    key, raw = make_key(alice)
    # A log-in's refresh starts: it takes its ticket and reads the row (not revoked) ...
    login_ticket = key_cache.take_ticket()
    stale = services._load_entry(key.public_id)
    assert stale["revoked"] is False
    # ... the revocation commits, and its own refresh writes "revoked" ...
    apikey_revoke(key=key, actor=alice)
    # ... then the log-in's refresh tries to write what it read.
    written = key_cache.entry_store(
        key.public_id, stale, ticket=login_ticket, ttl=key_cache.ENTRY_TTL
    )

    assert written is False
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_a_cache_miss_racing_a_revocation_cannot_bring_the_key_back(alice, make_key):
    key, raw = make_key(alice)
    services.cache.delete(key_cache.entry_key(key.public_id))
    # A request misses the cache and reads the row (ticket first) ...
    miss_ticket = key_cache.take_ticket()
    stale = services._load_entry(key.public_id)
    # ... the revocation commits and refreshes ...
    apikey_revoke(key=key, actor=alice)
    # ... and the request's fill comes last.
    key_cache.entry_store(key.public_id, stale, ticket=miss_ticket, ttl=key_cache.ENTRY_TTL)

    assert key_cache.entry_get(key.public_id)["revoked"] is True
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_a_newer_refresh_replaces_an_older_entry(alice, make_key):
    key, raw = make_key(alice)
    older = key_cache.take_ticket()
    before = services._load_entry(key.public_id)
    apikey_update(key=key, name="renamed", requests_per_minute=7, actor=alice)
    # The older writer came first this time: the change's refresh must still land after it.
    services.cache.delete(key_cache.entry_key(key.public_id))
    services.cache.delete(key_cache._version_key(key.public_id))
    assert key_cache.entry_store(key.public_id, before, ticket=older, ttl=60) is True
    services.apikey_refresh_cache(public_id=key.public_id)

    assert apikey_authenticate(raw_key=raw).requests_per_minute == 7


def test_tickets_only_grow():
    first = key_cache.take_ticket()
    assert key_cache.take_ticket() > first


@pytest.mark.django_db  # not transactional: on_commit callbacks are captured, not run
def test_a_log_in_does_not_refresh_the_keys_of_the_user(
    alice, make_key, django_capture_on_commit_callbacks
):
    """Fewer refreshes, fewer races: a log-in writes only last_login, which no entry holds."""
    make_key(alice)
    with django_capture_on_commit_callbacks() as callbacks:
        alice.save(update_fields=["last_login"])
    assert callbacks == []

    with django_capture_on_commit_callbacks() as callbacks:
        alice.save(update_fields=["is_active"])
    assert len(callbacks) == 1
