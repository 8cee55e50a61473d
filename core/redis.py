"""The shared Redis client (limits, key cache invalidation), or None on the embedded default."""

from __future__ import annotations

import functools

from django.conf import settings


def get_redis():
    """The client for settings.REDIS_URL (one per URL and process), or None without Redis."""
    return _client_for(settings.REDIS_URL) if settings.REDIS_URL else None


@functools.cache
def _client_for(url: str):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: a limits script that timed out after Redis ran it must not run twice (it
    # would admit the request twice), and a Redis outage should fail fast into a clear 503.
    no_retry = Retry(NoBackoff(), 0)
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=256,
        timeout=2,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=no_retry,
    )
    return redis.Redis(connection_pool=pool, retry=no_retry)


get_redis.cache_clear = _client_for.cache_clear  # type: ignore[attr-defined]  # forget clients (tests that move REDIS_URL)


def redis_ping() -> str:
    client = get_redis()
    if client is None:
        return "disabled"
    try:
        client.ping()
        return "ok"
    except Exception:
        return "error"
