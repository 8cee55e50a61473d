"""Choosing a router: weighted among the usable ones, fewest in-flight breaking ties, with a
circuit breaker per router (consecutive failures -> cool-down -> one half-open probe).

Every pick must be followed by exactly one verdict (record_success or record_failure: the
upstream client gives one on every path, exceptions included) and one release. The verdict is
what ends a half-open probe, so a pick without one would leave the router "probing" for good.

State is per worker process, on purpose: it is a cache of recent experience, cheap to lose,
and the Celery probe writes the durable health state (Router.health) that every process
reads through the routing table. The in-flight counts are published for the operator's pages
by a background thread (inference.inflight), started on the first pick: never by a request.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass

from catalog.routing import RouterInfo
from inference import inflight

FAILURES_TO_OPEN = 3
COOL_DOWN_SECONDS = 10.0


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


# The clock the breaker reads; tests replace it to step past the cool-down without waiting.
clock = time.monotonic

_lock = threading.Lock()
_breakers: dict[int, _Breaker] = {}
_in_flight: dict[int, int] = {}
_publishing_pid = 0  # the process whose publisher runs (a forked child starts its own)


def _available(router: RouterInfo, now: float) -> bool:
    breaker = _breakers.get(router.id)
    if breaker is None or breaker.failures < FAILURES_TO_OPEN:
        return True
    # Open: nothing until the cool-down ends, then a single half-open probe at a time.
    return now >= breaker.open_until and not breaker.probing


def pick(routers: list[RouterInfo], exclude: set[int]) -> RouterInfo | None:
    global _publishing_pid
    if _publishing_pid != os.getpid():
        _publishing_pid = os.getpid()
        inflight.publisher_start(in_flight_snapshot)
    now = clock()
    with _lock:
        candidates = [
            r
            for r in routers
            if r.id not in exclude and r.health != "unhealthy" and _available(r, now)
        ]
        if not candidates:
            return None
        best = min(_in_flight.get(r.id, 0) / r.weight for r in candidates)
        tied = [r for r in candidates if _in_flight.get(r.id, 0) / r.weight == best]
        chosen = (
            random.choices(tied, weights=[r.weight for r in tied])[0] if len(tied) > 1 else tied[0]
        )
        breaker = _breakers.get(chosen.id)
        if breaker is not None and breaker.failures >= FAILURES_TO_OPEN:
            breaker.probing = True
        _in_flight[chosen.id] = _in_flight.get(chosen.id, 0) + 1
        return chosen


def in_flight_snapshot() -> dict[int, int]:
    """This process's requests in flight per router."""
    with _lock:
        return dict(_in_flight)


def routers_in_flight() -> inflight.InFlight:
    """Requests in flight per router, every worker's (this process's without Redis)."""
    return inflight.routers_in_flight(local=in_flight_snapshot)


def release(router_id: int) -> None:
    with _lock:
        _in_flight[router_id] = max(0, _in_flight.get(router_id, 1) - 1)


def record_success(router_id: int) -> None:
    with _lock:
        _breakers.pop(router_id, None)


def record_failure(router_id: int) -> None:
    with _lock:
        breaker = _breakers.setdefault(router_id, _Breaker())
        breaker.failures += 1
        breaker.probing = False
        if breaker.failures >= FAILURES_TO_OPEN:
            breaker.open_until = clock() + COOL_DOWN_SECONDS


def breaker_state(router_id: int) -> str:
    breaker = _breakers.get(router_id)
    if breaker is None or breaker.failures < FAILURES_TO_OPEN:
        return "closed"
    if clock() < breaker.open_until:
        return "open"
    return "probing" if breaker.probing else "half_open"


def reset() -> None:
    """Forget all state (tests)."""
    global _publishing_pid
    inflight.publisher_stop()
    _publishing_pid = 0
    with _lock:
        _breakers.clear()
        _in_flight.clear()
