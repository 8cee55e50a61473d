"""The shared Redis client (limits, key cache invalidation), or None on the embedded default."""

from __future__ import annotations

import functools

from django.conf import settings


@functools.cache
def get_redis():
    if not settings.REDIS_URL:
        return None
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: a limits script that timed out after Redis ran it must not run twice (it
    # would admit the request twice), and a Redis outage should fail fast into a clear 503.
    no_retry = Retry(NoBackoff(), 0)
    pool = redis.BlockingConnectionPool.from_url(
        settings.REDIS_URL,
        max_connections=256,
        timeout=2,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=no_retry,
    )
    return redis.Redis(connection_pool=pool, retry=no_retry)


def redis_ping() -> str:
    client = get_redis()
    if client is None:
        return "disabled"
    try:
        client.ping()
        return "ok"
    except Exception:
        return "error"
