"""Requests in flight per router across every worker, for the operator's pages.

The balancer counts in-flight requests per process (`balancer._in_flight`), and the request
path must not pay a Redis round trip to share them. So each process publishes its own counts
from a background thread (a greenlet under gevent) every PUBLISH_SECONDS, started the first
time its balancer picks a router, and the pages read every process's counts at once.

All processes share one hash per deployment: a field per process, holding when the field
stops counting (Redis's clock, so hosts' clocks do not matter) and the process's counts. A
process that dies stops refreshing its field: the reader ignores it once it is due, and the
next publish of any process deletes it. One key means one round trip for the reader (TIME and
HGETALL pipelined) and a publish script that touches only its KEYS (valid on Redis Cluster).

Without Redis (the embedded default) the figure is this process's own counts, and says so.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from core.redis import get_redis, node_client
from metering.limits import keys

log = logging.getLogger(__name__)

PUBLISH_SECONDS = 2.0
# A process's figures count this long after its last publish: a few missed publishes (a busy
# worker, a Redis hiccup) do not blank them, a dead worker's vanish within seconds.
TTL_SECONDS = 3 * PUBLISH_SECONDS + 1

# KEYS[1] the hash; ARGV: this process's field, its counts ("router:count,..."), the TTL (ms).
PUBLISH_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local due = tonumber(string.match(fields[i + 1], '^(%d+)'))
  if due == nil or due <= now_ms then redis.call('HDEL', KEYS[1], fields[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], (now_ms + ttl) .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return now_ms
"""


def routers_inflight_key() -> str:
    """Hash: process -> "<due ms> <router>:<count>,...", every process of the deployment."""
    return f"{keys.prefix()}:routers:inflight"


@dataclass(frozen=True, slots=True)
class InFlight:
    counts: dict[int, int]  # router id -> requests in flight
    scope: str  # "all workers" (from Redis), or "this process" (without Redis, or it failed)
    workers: int  # processes whose figures count (1 for "this process")

    def of(self, router_id: int) -> int:
        return self.counts.get(router_id, 0)

    @property
    def this_process_only(self) -> bool:
        return self.scope != "all workers"


def _encode(counts: dict[int, int]) -> str:
    return ",".join(f"{router}:{n}" for router, n in sorted(counts.items()) if n > 0)


def _decode(value: str) -> tuple[int, dict[int, int]]:
    due, _, body = value.partition(" ")
    counts: dict[int, int] = {}
    for item in body.split(","):
        if item:
            router, _, n = item.partition(":")
            counts[int(router)] = int(n)
    return int(due), counts


def inflight_publish(
    *, process: str, counts: dict[int, int], ttl_seconds: float = TTL_SECONDS
) -> None:
    """Write one process's counts (and drop the fields of processes that stopped publishing)."""
    client = get_redis()
    if client is None:
        return
    client.eval(
        PUBLISH_LUA, 1, routers_inflight_key(), process, _encode(counts), int(ttl_seconds * 1000)
    )


def inflight_by_process() -> dict[str, dict[int, int]]:
    """Every live process's counts, from one pipelined round trip (TIME, HGETALL)."""
    client = get_redis()
    if client is None:
        return {}
    key = routers_inflight_key()
    # TIME from the server that holds the hash (on a cluster: its node), whose clock wrote it
    pipe = node_client(client, key).pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(key)
    (seconds, micros), fields = pipe.execute()
    now_ms = seconds * 1000 + micros // 1000
    live = {}
    for process, value in fields.items():
        try:
            due, counts = _decode(value.decode())
        except ValueError:
            continue
        if due > now_ms:
            live[process.decode()] = counts
    return live


def routers_in_flight(*, local: Callable[[], dict[int, int]]) -> InFlight:
    """Requests in flight per router: summed over every live process with Redis; else (or if
    Redis fails) `local()`, this process's own counts."""
    if get_redis() is not None:
        try:
            processes = inflight_by_process()
        except Exception as exc:
            log.warning("in-flight figures: Redis unavailable (%s)", exc.__class__.__name__)
        else:
            total: dict[int, int] = {}
            for counts in processes.values():
                for router, n in counts.items():
                    total[router] = total.get(router, 0) + n
            return InFlight(total, "all workers", len(processes))
    return InFlight({r: n for r, n in local().items() if n > 0}, "this process", 1)


class Publisher:
    """One per process: publishes `snapshot()` every PUBLISH_SECONDS. Never raises."""

    def __init__(self, snapshot: Callable[[], dict[int, int]]) -> None:
        self.snapshot = snapshot
        self.pid = os.getpid()
        self.process = f"{socket.gethostname()}:{self.pid}:{secrets.token_hex(4)}"
        self._failing = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="inflight-publisher")
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.publish_once()
            self._stopped.wait(PUBLISH_SECONDS)

    def stop(self) -> None:
        """Publish no more (tests); the figures vanish after TTL_SECONDS."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def publish_once(self) -> None:
        try:
            inflight_publish(process=self.process, counts=self.snapshot())
        except Exception as exc:
            if not self._failing:  # once per outage, not every period
                log.warning("in-flight publish failed (%s)", exc.__class__.__name__)
            self._failing = True
        else:
            self._failing = False


_publisher: Publisher | None = None
_start_lock = threading.Lock()


def publisher_start(snapshot: Callable[[], dict[int, int]]) -> None:
    """Start this process's publisher, once (again in a forked child); nothing without Redis."""
    global _publisher
    if not settings.REDIS_URL:
        return
    with _start_lock:
        if _publisher is None or _publisher.pid != os.getpid():
            _publisher = Publisher(snapshot)


def publisher_stop() -> None:
    """Stop this process's publisher (tests: the next pick starts a fresh one)."""
    global _publisher
    with _start_lock:
        if _publisher is not None:
            _publisher.stop()
        _publisher = None
