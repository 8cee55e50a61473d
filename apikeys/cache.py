"""The cache of API-key entries that /v1/ authenticates from, with versioned writes.

A refresh reads the key's row (and its owner's), then writes the entry. Two refreshes can
interleave: a login's refresh reads "not revoked", a revocation commits and writes "revoked",
then the login's refresh writes its stale "not revoked" back, for a whole TTL. So every
writer takes a ticket BEFORE it reads the row, and the entry is written only if its ticket is
above the one stored beside it:

- a refresh triggered by a change runs after that change committed, so it takes its ticket
  after the commit; any writer with a higher ticket took it later still, so it read the
  change too;
- a writer with a lower ticket may have read the row before the change: if it comes last it
  is refused, whatever the timing.

Tickets come from one counter in Redis (INCR) and the compare-and-set is one Lua call; on the
embedded default (one process, local memory) the same happens under a lock.

The hot path reads the entry from process memory, with no Redis round trip (the GET it was
cost a tenth of a worker's CPU and a round trip before every upstream call: BENCHMARKS.md).
Each process holds the entries it read, and a subscription to a change channel: every write
of an entry is PUBLISHed after it, and every lookup first drains what the subscription has
received (a non-blocking read of its socket, no round trip). The publisher waits for one more
round trip after its PUBLISH (core/cache.py says why), so by the time a revocation has
returned, its notice is in every subscribed socket; the request after it, wherever it lands,
reads the socket after the notice arrived and misses the dropped entry
(tests/test_apikeys_cross_process.py).
Whenever the subscription is not known to be whole (not yet confirmed, broken, Redis
restarted), the process forgets every entry and reads from Redis as before, until it has
subscribed again. An entry is kept LOCAL_TTL at most, which bounds what a notice lost
without a broken connection could cost.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from typing import Any

from django.core.cache import cache

log = logging.getLogger(__name__)

ENTRY_TTL = 300  # bounds staleness if Redis was unreachable when a change was published
MISSING_TTL = 60  # negative cache: garbage keys cannot hammer the database
# The version outlives its entry so that a writer stalled past the entry's TTL is still
# refused; its counter never expires.
VERSION_TTL = 24 * 3600
_TICKETS = "apikey-tickets"


def entry_key(public_id: str) -> str:
    # The braces are a Redis Cluster hash tag: the entry and its version share a slot.
    return f"apikey:{{{public_id}}}"


def _version_key(public_id: str) -> str:
    return f"apikey-version:{{{public_id}}}"


LOCAL_TTL = 30.0  # seconds an entry is served from memory before Redis is read again
LOCAL_MAX = 10_000  # entries a process holds at most (expired ones are pruned to stay under)
_CHANNEL = "apikey-changed"
_ALL = "*"  # a notice that every entry may have changed


def entry_get(public_id: str):
    """The cached entry (a dict, MISSING, or None when absent): the hot path's only read, from
    process memory when the change subscription is whole (see the module's docstring)."""
    return _local.get(public_id)


def entries_forget(public_id: str | None = None) -> None:
    """Tell every process that an entry changed (all of them without `public_id`): entry_store
    does, after each write; whoever removes entries from the cache by other means calls it."""
    _local.drop(public_id)
    if hasattr(cache, "publish"):
        try:
            cache.publish(cache.notices_channel(_CHANNEL), public_id or _ALL)  # type: ignore[attr-defined] # PortalRedisCache
        except Exception as exc:
            # The node every process subscribes on is unreachable: so are their subscriptions,
            # and none of them serves from memory (LOCAL_TTL bounds a partition between them).
            log.warning("key change notice not sent (%s)", exc.__class__.__name__)


class _LocalEntries:
    """The entries this process has read, valid while its change subscription is whole."""

    RESUBSCRIBE_EVERY = 1.0  # after a failure, the next try to subscribe (seconds)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[dict, float]] = {}
        self._pubsub: Any = None  # redis-py's PubSub, subscribed
        self._owner: tuple | None = None  # (pid, cache client) the subscription belongs to
        self._retry_at = 0.0
        self._generation = 0  # notices handled so far
        self._lock = threading.Lock()

    def get(self, public_id: str):
        if not hasattr(cache, "subscribe"):  # the embedded default: already process memory
            return cache.get(entry_key(public_id))
        with self._lock:
            whole = self._drain()
            if whole:
                held = self._entries.get(public_id)
                if held is not None and held[1] > time.monotonic():
                    return held[0]
            generation = self._generation
        entry = cache.get(entry_key(public_id))
        if whole and isinstance(entry, dict):
            with self._lock:
                # A notice handled while the GET was out may be about this very entry.
                if self._drain() and self._generation == generation:
                    now = time.monotonic()
                    if len(self._entries) >= LOCAL_MAX:
                        self._prune(now)
                    self._entries[public_id] = (entry, now + LOCAL_TTL)
        return entry

    def _prune(self, now: float) -> None:
        """Drop the expired entries; all of them if that is not enough (many keys in use)."""
        self._entries = {k: held for k, held in self._entries.items() if held[1] > now}
        if len(self._entries) >= LOCAL_MAX:
            self._entries.clear()

    def drop(self, public_id: str | None) -> None:
        with self._lock:
            self._generation += 1
            if public_id is None:
                self._entries.clear()
            else:
                self._entries.pop(public_id, None)

    def _drain(self) -> bool:
        """Apply every notice received; False when the subscription is not whole (then
        nothing may be served from memory)."""
        owner = (os.getpid(), cache._cache)  # type: ignore[attr-defined] # PortalRedisCache
        if (self._pubsub is None or self._owner != owner) and not self._subscribe(owner):
            return False
        try:
            while True:
                message = self._pubsub.get_message(timeout=0.0)
                if message is None:
                    return True
                if message.get("type") != "message":
                    continue
                self._generation += 1
                data = message["data"].decode()
                if data == _ALL:
                    self._entries.clear()
                else:
                    self._entries.pop(data, None)
        except Exception as exc:
            log.warning("key change subscription lost (%s)", exc.__class__.__name__)
            self._reset()
            self._retry_at = time.monotonic() + self.RESUBSCRIBE_EVERY
            return False

    def _subscribe(self, owner: tuple) -> bool:
        self._reset()
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._pubsub = cache.subscribe(cache.notices_channel(_CHANNEL))  # type: ignore[attr-defined] # PortalRedisCache
        except Exception as exc:
            log.warning("key change subscription failed (%s)", exc.__class__.__name__)
            self._retry_at = time.monotonic() + self.RESUBSCRIBE_EVERY
            return False
        self._owner = owner
        return True

    def _reset(self) -> None:
        """Forget every entry and the subscription (no notice can be trusted to have come)."""
        self._generation += 1
        self._entries.clear()
        pubsub, self._pubsub, self._owner = self._pubsub, None, None
        if pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                pubsub.close()


_local = _LocalEntries()


def take_ticket() -> int:
    """Take before reading the row the entry will be built from."""
    if hasattr(cache, "next_ticket"):
        return cache.next_ticket(_TICKETS)
    return next(_local_tickets)


def entry_store(public_id: str, entry, *, ticket: int, ttl: int) -> bool:
    """Write the entry unless a writer with a newer ticket already has; True if written."""
    if hasattr(cache, "set_if_newer"):
        written = cache.set_if_newer(
            entry_key(public_id),
            entry,
            ttl,
            version_key=_version_key(public_id),
            version=ticket,
            version_ttl=VERSION_TTL,
        )
        if written:
            entries_forget(public_id)
        return written
    with _local_lock:
        if (cache.get(_version_key(public_id)) or 0) >= ticket:
            return False
        cache.set(entry_key(public_id), entry, ttl)
        cache.set(_version_key(public_id), ticket, VERSION_TTL)
        return True


# The embedded default: a process-local cache, so process-local tickets and lock suffice.
_local_tickets = itertools.count(1)
_local_lock = threading.Lock()
