"""Database helpers: the hot path's connection release, and the read replica's routing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections


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


# --- the read replica -------------------------------------------------------------------------

_replica_reads: ContextVar[bool] = ContextVar("replica_reads", default=False)


def replica_alias() -> str:
    """The replica's alias when one is configured (DATABASE_REPLICA_URL), else the primary's."""
    return settings.READ_REPLICA or DEFAULT_DB_ALIAS


def reads_alias() -> str:
    """Where a heavy read made now goes: the replica inside `read_replica()` unless the primary
    is in a transaction (what it wrote must be read back from it), else the primary. For a
    queryset evaluated later (a streamed response, a template) fix it now:
    `qs.using(reads_alias())`; for raw SQL, `connections[reads_alias()]`."""
    if not _replica_reads.get() or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return replica_alias()


@contextmanager
def read_replica() -> Iterator[None]:
    """Within it (a `with` block, or a view decorated `@read_replica()`), reads of the models in
    settings.READ_REPLICA_MODELS go to the replica. Use it only where nothing reads back what
    the same request wrote: the replica lags the primary by its replication delay."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


class ReplicaRouter:
    """settings.DATABASE_ROUTERS: writes and everything outside `read_replica()` on the primary;
    the heavy models' reads inside it on the replica; migrations on the primary only (the
    replica is a copy of it)."""

    def db_for_read(self, model, **hints) -> str | None:
        if model._meta.label_lower in settings.READ_REPLICA_MODELS:
            return reads_alias()
        return None

    def db_for_write(self, model, **hints) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True  # the same data on both

    def allow_migrate(self, db, app_label, model_name=None, **hints) -> bool:
        return db == DEFAULT_DB_ALIAS
