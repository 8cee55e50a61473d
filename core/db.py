"""Database helpers for the hot path."""

from __future__ import annotations

from django.db import connection


def release_connection() -> None:
    """Give this greenlet's pooled connection back now rather than at the end of the request.

    The /v1/ path touches the database only on a cache miss (a key's first use, a catalog
    rebuild, the once-a-minute last-used write). Without this, that request would keep its
    pooled connection while it waits on the router for seconds or streams for minutes, and a
    burst of cold requests would queue on DB_POOL_MAX_SIZE. Inside a transaction (tests, or a
    caller's atomic block) the connection is not ours to close.
    """
    if connection.connection is not None and not connection.in_atomic_block:
        connection.close()
