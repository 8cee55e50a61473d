"""The cache's multi-key operations (Django sends them as one MGET, MSET or DEL) work wherever
the keys live: on Redis Cluster, on different nodes (`make test-cluster`)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import cache

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache")

NAMES = [f"multi-{i}" for i in range(40)]  # 40 keys: many slots, every node of a cluster


def test_set_get_and_delete_many_keys_at_once():
    from core.redis import is_cluster

    client = cache._cache.get_client()
    if is_cluster(client):
        nodes = {client.get_node_from_key(cache.make_key(name)).name for name in NAMES}
        assert len(nodes) > 1
    assert cache.set_many({name: {"n": i} for i, name in enumerate(NAMES)}, timeout=60) == []
    assert cache.get_many([*NAMES, "multi-absent"]) == {
        name: {"n": i} for i, name in enumerate(NAMES)
    }
    assert 0 < client.ttl(cache.make_key(NAMES[0])) <= 60
    cache.delete_many(NAMES[:20])
    assert set(cache.get_many(NAMES)) == set(NAMES[20:])
    cache.set_many({name: 1 for name in NAMES[20:]}, timeout=0)  # a timeout of 0: gone
    assert cache.get_many(NAMES) == {}
