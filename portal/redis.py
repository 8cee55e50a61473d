"""The shared Redis client (limits, key cache invalidation), or None on the embedded default."""

from __future__ import annotations

import functools

from django.conf import settings


@functools.cache
def get_redis():
    if not settings.REDIS_URL:
        return None
    import redis

    pool = redis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=64, timeout=2, socket_timeout=2,
        socket_connect_timeout=2, health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def redis_ping() -> str:
    client = get_redis()
    if client is None:
        return "disabled"
    try:
        client.ping()
        return "ok"
    except Exception:  # noqa: BLE001
        return "error"
