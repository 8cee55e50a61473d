"""Django's Redis cache, with its client object reused.

Django's RedisCacheClient builds a new `redis.Redis` for every operation; in redis-py 8 that
constructor (response callbacks, a case-insensitive dict) was a fifth of a worker's CPU on the
/v1/ path, where every request reads its API key's entry from this cache. A client is
thread- and greenlet-safe (its pool hands out connections), so one per pool is enough.

With `REDIS_CLUSTER=1` the client is a cluster client (core/redis.py), and the operations
Django sends as one multi-key command (MGET, MSET) go slot by slot.

Django keeps its cache objects in a thread-local, which gevent makes greenlet-local: each
request's greenlet would build its own cache, its own connection pool and a new Redis
connection (a name lookup on gevent's thread pool, a connect) for its one GET, and leave the
socket to the garbage collector. That was a sixth of a worker's CPU on a stream's way to its
first token and most of the time it added there (BENCHMARKS.md). So the client, with its
pools, is one per process and cache configuration, whatever the thread or greenlet.

`clear()` deletes this cache's own entries only. Django's is FLUSHDB, which on the Redis that
the limits counters, the admission journal, the usage spool and Celery's queues share would
wipe them all (a `cache.clear()` typed in a shell would lose usage records).

It also offers the two operations a versioned cache entry needs (`next_ticket`,
`set_if_newer`); `apikeys/cache.py` explains why the key cache needs them.
"""

from __future__ import annotations

import threading

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis import ready_check_options, redis_from_url, scan_all


class _ReusedClient(RedisCacheClient):
    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        clients = self.__dict__.setdefault("_clients", {})
        client = clients.get(id(pool))
        if client is None:
            client = clients[id(pool)] = self._client(connection_pool=pool)
        return client


class _ClusterClient(RedisCacheClient):
    """One cluster client (REDIS_URL a startup node); multi-key commands split by slot."""

    def get_client(self, key=None, *, write=False):
        client = self.__dict__.get("_cluster")
        if client is None:
            options = self._pool_options
            client = self.__dict__["_cluster"] = redis_from_url(
                self._servers[0],
                cluster=True,
                max_connections=options.get("max_connections", 64),
                timeout=options.get("timeout", 5),
            )
        return client

    def get_many(self, keys):
        client = self.get_client(None)
        values = client.mget_nonatomic(keys)
        return {
            k: self._serializer.loads(v) for k, v in zip(keys, values, strict=True) if v is not None
        }

    def set_many(self, data, timeout):
        # MSET's keys must share a slot; a cluster pipeline sends each SET to its own node.
        pipeline = self.get_client(None, write=True).pipeline()
        for key, value in data.items():
            value = self._serializer.dumps(value)
            if timeout is None:
                pipeline.set(key, value)
            elif timeout == 0:
                pipeline.delete(key)
            else:
                pipeline.set(key, value, ex=timeout)
        pipeline.execute()


# (client class, servers, options) -> the process's client for them (see the docstring).
_clients: dict[tuple, RedisCacheClient] = {}
_clients_lock = threading.Lock()


class PortalRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ClusterClient if getattr(settings, "REDIS_CLUSTER", False) else _ReusedClient

    @cached_property
    def _cache(self):
        ident = (self._class, tuple(self._servers), repr(sorted(self._options.items())))
        client = _clients.get(ident)
        if client is None:
            with _clients_lock:
                client = _clients.get(ident)
                if client is None:
                    client = _clients[ident] = self._class(self._servers, **self._options)
        return client

    def clear(self) -> None:
        """Delete the entries under this cache's KEY_PREFIX (`<prefix>:<version>:<key>`),
        nothing else on the database."""
        client = self._cache.get_client(write=True)
        pattern = _glob_escape(self.key_prefix) + ":[0-9]*"
        batch: list = []
        for name in scan_all(client, match=pattern):
            batch.append(name)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)

    # --- versioned entries (see apikeys/cache.py) ---------------------------------------------

    def next_ticket(self, key: str) -> int:
        """INCR a counter that never expires: a number larger than any handed out before, in
        every process sharing this Redis."""
        key = self.make_and_validate_key(key)
        return int(self._cache.get_client(key, write=True).incr(key))

    def set_if_newer(
        self, key: str, value, timeout: int, *, version_key: str, version: int, version_ttl: int
    ) -> bool:
        """Write `value` only if `version` is above the one stored beside it (one Lua call, so
        no writer can slip in between the comparison and the write). Both keys carry the same
        hash tag in callers' names, so the script is valid on Redis Cluster."""
        key = self.make_and_validate_key(key)
        version_key = self.make_and_validate_key(version_key)
        client = self._cache.get_client(key, write=True)
        shared = self._cache.__dict__  # the process's, not this greenlet's
        script = shared.get("_set_if_newer")
        if script is None:
            script = shared["_set_if_newer"] = client.register_script(_SET_IF_NEWER)
        value = self._cache._serializer.dumps(value)
        written = script(
            keys=[key, version_key], args=[version, value, timeout, version_ttl], client=client
        )
        return bool(written)

    # --- change notices (see apikeys/cache.py) -------------------------------------------------

    def notices_channel(self, name: str) -> str:
        return f"{self.key_prefix}:{name}"

    def publish(self, channel: str, message: str) -> None:
        """PUBLISH on the node the subscribers listen on (see `subscribe`)."""
        shared = self._cache.__dict__  # the process's client, not this greenlet's
        client = shared.get("_notices")
        if client is None:
            client = shared["_notices"] = self._notices_client()
        client.publish(channel, message)
        # Redis queues the message to every subscriber while it runs PUBLISH, but writes its
        # clients' answers after the command in its own order, the publisher's reply possibly
        # first: a publisher that went on at once could be answered, and a subscriber read its
        # socket, before the message's write (a window seen on a saturated machine). Every
        # answer queued while a command ran is written before Redis reads the next one, so
        # once a second round trip is answered the message is in every subscriber's socket on
        # this host (a message to another host is then in flight, a network hop behind).
        client.ping()

    def subscribe(self, channel: str):
        """A subscription to `channel` on a connection of its own, its confirmation read: from
        then on every message published is in order on it.

        Publisher and subscribers all use this cache's first server, on a cluster too (its
        startup node: SUBSCRIBE and PUBLISH work on any node). A PUBLISH reaches the other
        nodes' subscribers over the cluster bus, after the publisher has its answer; on the
        node it was sent to, every subscriber has the message once `publish` returns."""
        pubsub = self._notices_client().pubsub(ignore_subscribe_messages=False)
        pubsub.subscribe(channel)
        reply = pubsub.get_message(timeout=2.0)
        if not reply or reply.get("type") != "subscribe":
            pubsub.close()
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {channel}")
        return pubsub

    def _notices_client(self) -> redis.Redis:
        # No retry: a subscription whose connection dropped must raise, not be renewed quietly
        # (the messages published meanwhile would be lost without anyone knowing). The key
        # cache drains its subscription before every lookup: the parser's check for a message
        # waiting asks poll(2) directly (core/redis.py), not gevent's poll with a timer.
        return redis.Redis.from_url(
            self._servers[0],  # type: ignore[attr-defined] # RedisCache's
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            **ready_check_options(),
        )


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


_SET_IF_NEWER = """
local stored = tonumber(redis.call('GET', KEYS[2]) or '0')
if stored >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[4])
return 1
"""
