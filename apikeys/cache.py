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
embedded default (one process, local memory) the same happens under a lock. The hot path is
unchanged: one GET of the entry.
"""

from __future__ import annotations

import itertools
import threading

from django.core.cache import cache

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


def entry_get(public_id: str):
    """The cached entry (a dict, MISSING, or None when absent): the hot path's only read."""
    return cache.get(entry_key(public_id))


def take_ticket() -> int:
    """Take before reading the row the entry will be built from."""
    if hasattr(cache, "next_ticket"):
        return cache.next_ticket(_TICKETS)
    return next(_local_tickets)


def entry_store(public_id: str, entry, *, ticket: int, ttl: int) -> bool:
    """Write the entry unless a writer with a newer ticket already has; True if written."""
    if hasattr(cache, "set_if_newer"):
        return cache.set_if_newer(
            entry_key(public_id),
            entry,
            ttl,
            version_key=_version_key(public_id),
            version=ticket,
            version_ttl=VERSION_TTL,
        )
    with _local_lock:
        if (cache.get(_version_key(public_id)) or 0) >= ticket:
            return False
        cache.set(entry_key(public_id), entry, ttl)
        cache.set(_version_key(public_id), ticket, VERSION_TTL)
        return True


# The embedded default: a process-local cache, so process-local tickets and lock suffice.
_local_tickets = itertools.count(1)
_local_lock = threading.Lock()
