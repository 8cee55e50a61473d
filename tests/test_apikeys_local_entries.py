"""Key entries are served from process memory only while the change subscription is whole.

A process keeps the entries it read and drops one when a change notice for it arrives on
Redis (apikeys/cache.py); these tests send the notice as another process would (a PUBLISH on
its own connection) and break the subscription the way a Redis restart does. The other
process's side, end to end, is tests/test_apikeys_cross_process.py.
"""

from __future__ import annotations

import os

import pytest
import redis
from django.core.cache import cache

from apikeys import cache as key_cache

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="needs REDIS_URL: the embedded default has no shared cache",
    ),
]


def _another_process() -> redis.Redis:
    # On a cluster, the node the subscription is on (REDIS_URL, the startup node).
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _notice_from_another_process(message: str) -> int:
    """PUBLISH a change notice as a writer does (core/cache.py's `publish`: the message, then
    one more round trip, after which every subscriber has it); the subscribers reached."""
    other = _another_process()
    reached = other.publish(cache.notices_channel("apikey-changed"), message)
    other.ping()
    return reached


def _read_and_change_behind_its_back(key) -> dict:
    """Read the entry (now held in memory), then change its Redis copy without a notice."""
    held = key_cache.entry_get(key.public_id)
    changed = {**held, "rpm": 4242}
    cache.set(key_cache.entry_key(key.public_id), changed, 60)
    return held


def test_an_entry_is_served_from_memory_until_its_notice_arrives(alice, make_key):
    key, _ = make_key(alice)
    held = _read_and_change_behind_its_back(key)
    assert key_cache.entry_get(key.public_id)["rpm"] == held["rpm"]  # from memory

    assert _notice_from_another_process(key.public_id) >= 1

    assert key_cache.entry_get(key.public_id)["rpm"] == 4242


def test_a_notice_for_every_entry_drops_them_all(alice, make_key):
    key, _ = make_key(alice)
    _read_and_change_behind_its_back(key)

    _notice_from_another_process("*")

    assert key_cache.entry_get(key.public_id)["rpm"] == 4242


def test_nothing_is_served_from_memory_once_the_subscription_broke(alice, make_key):
    key, _ = make_key(alice)
    _read_and_change_behind_its_back(key)
    # The subscription's connection ends (Redis restarted, a proxy cut it): notices sent
    # meanwhile could be lost, so what memory holds can no longer be trusted.
    host, port = key_cache._local._pubsub.connection._sock.getsockname()[:2]
    assert _another_process().client_kill(f"{host}:{port}")

    assert key_cache.entry_get(key.public_id)["rpm"] == 4242
    # ... and the process subscribes again at a later lookup.
    key_cache._local._retry_at = 0.0
    key_cache.entry_get(key.public_id)
    assert key_cache._local._pubsub is not None


def test_memory_holds_a_bounded_number_of_entries(alice, make_key, monkeypatch):
    monkeypatch.setattr(key_cache, "LOCAL_MAX", 2)
    keys = [make_key(alice, f"key {i}")[0] for i in range(3)]

    for key in keys:
        assert key_cache.entry_get(key.public_id)["public_id"] == key.public_id

    assert 0 < len(key_cache._local._entries) <= 2
