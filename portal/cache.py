"""Django's Redis cache, with its client object reused.

Django's RedisCacheClient builds a new `redis.Redis` for every operation; in redis-py 8 that
constructor (response callbacks, a case-insensitive dict) was a fifth of a worker's CPU on the
/v1/ path, where every request reads its API key's entry from this cache. A client is
thread- and greenlet-safe (its pool hands out connections), so one per pool is enough.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _ReusedClient(RedisCacheClient):
    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        clients = self.__dict__.setdefault("_clients", {})
        client = clients.get(id(pool))
        if client is None:
            client = clients[id(pool)] = self._client(connection_pool=pool)
        return client


class PortalRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ReusedClient
