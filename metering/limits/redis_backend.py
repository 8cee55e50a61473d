"""Limits in Redis: shared by every web process, exact under concurrency.

Admission is one EVALSHA of admit.lua (checks, then increments only if all pass); settling is
one EVALSHA of settle.lua. redis-py's Script reloads the script on NOSCRIPT (after a Redis
restart or SCRIPT FLUSH) and retries once.

Clock: the sliding windows and in-flight leases use the Redis server's TIME inside the script,
so every web process measures the window on one clock (process clocks drift; a window measured
on two clocks is not exact). The calendar day and month come from the web process clock: their
key names must be known to settle, and a node a second off only moves a request at midnight
into the neighbouring day, where that day's count is still exact.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import redis

from core.redis import DirectLane, is_cluster, run_scripts
from metering.limits import keys
from metering.limits.base import (
    ALL_PERIOD_NAMES,
    WINDOW_MS,
    WINDOW_NAMES,
    BackendUnavailable,
    JournalLine,
    Limits,
    LimitsBackend,
    LimitsVerdict,
    Ticket,
)

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
ADMIT_LUA = (_HERE / "admit.lua").read_text()
SETTLE_LUA = (_HERE / "settle.lua").read_text()


_NOSCRIPT_TRIES = 3  # calls of a script the server keeps forgetting, before failing closed


class RedisBackend(LimitsBackend):
    name = "redis"

    def __init__(
        self, client: redis.Redis, *, window_ms: int = WINDOW_MS, lane: DirectLane | None = None
    ):
        self.client = client
        # The request path's admission and slot release go down `lane` when there is one
        # (core.redis.DirectLane: the portal's shared client); everything else, the client.
        self._lane = lane
        self.window_ms = window_ms
        self._admit = client.register_script(ADMIT_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._indexed: dict[str, float] = {}  # org_base -> when this process last indexed it
        self._index_lock = threading.Lock()

    def _index_journal(self, org_base: str) -> None:
        """Put the organization in the journal index before its first journal entry (the
        index lives in another slot, so admit.lua cannot): one ZADD per organization and
        process every keys.INDEX_REFRESH_MS. Before, not after: a process that dies between the two
        leaves an indexed empty journal, never an entry the reconciler cannot find."""
        now = time.time() * 1000
        if self._indexed.get(org_base, 0) > now - keys.INDEX_REFRESH_MS:
            return
        self._call(self.client.zadd, keys.journal_index(), {org_base: now})
        with self._index_lock:
            self._indexed[org_base] = now

    def _run(self, script, keys, args, *, lane: DirectLane | None = None):
        try:
            if lane is not None:
                try:
                    return lane.execute("EVALSHA", script.sha, len(keys), *keys, *args)
                except redis.exceptions.NoScriptError:
                    pass  # it did not run: redis-py's Script below loads it and calls again
            for _ in range(_NOSCRIPT_TRIES - 1):
                try:
                    return script(keys=keys, args=args)
                except redis.exceptions.NoScriptError:
                    # redis-py reloads a forgotten script once; emptied again before that
                    # second call (a restart, a SCRIPT FLUSH), the script did not run: again.
                    continue
            return script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis unreachable: {exc}") from exc
        except redis.RedisError as exc:  # READONLY, OOM, LOADING...: unusable all the same
            log.exception("limits script failed")
            raise BackendUnavailable(f"Redis error: {exc}") from exc

    def admit(
        self,
        *,
        ticket: Ticket,
        limits: Limits,
        reserve: int,
        lease_ms: int,
        now_ms: int | None,
        dry: bool = False,
        journal: str = "",
    ) -> LimitsVerdict:
        p = ticket.periods
        args = [
            "" if now_ms is None else now_ms,
            ticket.member,
            reserve,
            lease_ms,
            self.window_ms,
            p.day,
            p.month,
            p.day_expire_at,
            p.month_expire_at,
            *limits.as_args(),
            "1" if dry else "0",
            journal,
            *limits.key_budget_args(),
        ]
        if journal:
            self._index_journal(ticket.org_base)
        raw = self._run(self._admit, self._keys(ticket), args, lane=self._lane)
        failed = raw[3].decode() if isinstance(raw[3], bytes) else str(raw[3])
        outcome = LimitsVerdict(
            admitted=bool(raw[0]),
            now_ms=int(raw[1]),
            inflight=int(raw[2]),
            failed=tuple(f for f in failed.split(",") if f),
        )
        values = raw[4:]
        for i, name in enumerate(WINDOW_NAMES):
            used, reset, retry = values[3 * i : 3 * i + 3]
            outcome.used[name], outcome.reset_ms[name] = int(used), int(reset)
            outcome.retry_ms[name] = int(retry)
        for i, name in enumerate(ALL_PERIOD_NAMES):
            outcome.used[name] = int(values[12 + i])
        outcome.used["conc"] = outcome.inflight
        return outcome

    @staticmethod
    def _keys(ticket: Ticket) -> tuple[str, ...]:
        p = ticket.periods
        return keys.script_keys(ticket.org_base, ticket.key_base, p.day, p.month)

    def release(self, *, ticket: Ticket) -> None:
        if "c" in ticket.tracks:
            send = self.client.execute_command if self._lane is None else self._lane.execute
            self._call(send, "ZREM", keys.inflight(ticket.org_base), ticket.member)

    def renew(self, *, ticket: Ticket, deadline_ms: int, lease_ms: int) -> None:
        # XX: a slot or journal entry that is gone (settled, or reclaimed) is not brought back.
        pipe = self.client.pipeline(transaction=False)
        if "c" in ticket.tracks:
            inflight = keys.inflight(ticket.org_base)
            pipe.zadd(inflight, {ticket.member: deadline_ms}, xx=True)
            pipe.pexpire(inflight, lease_ms + 1000, gt=True)
        pipe.zadd(keys.journal_due(ticket.org_base), {ticket.member: deadline_ms}, xx=True)
        self._call(pipe.execute)

    def count_refused(
        self, *, base: str, limit: int, now_ms: int, journal: JournalLine | None = None
    ) -> bool:
        minute = now_ms // WINDOW_MS
        if journal is not None:
            self._index_journal(journal.org_base)
        pipe = self.client.pipeline(transaction=False)
        name = keys.refused(base, minute)
        pipe.incr(name)
        pipe.pexpire(name, WINDOW_MS + 1000)
        if journal is not None:  # journaled optimistically, taken back below when over
            pipe.hset(keys.journal(journal.org_base), journal.member, journal.line)
            pipe.zadd(keys.journal_due(journal.org_base), {journal.member: journal.due_ms})
        count = self._call(pipe.execute)[0]
        within = int(count) <= limit
        if not within and journal is not None:
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(keys.journal(journal.org_base), journal.member)
            pipe.zrem(keys.journal_due(journal.org_base), journal.member)
            self._call(pipe.execute)
        return within

    MGET_BATCH = 1000

    def read_counters(self, names: list[str], *, now_ms: int) -> list[int]:
        # One pipeline of MGETs (a thousand names each): one round trip for the lot. On a
        # cluster the names span slots, which one MGET cannot: a GET each, and the cluster
        # pipeline sends one batch per node.
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        if is_cluster(self.client):
            for name in names:
                pipe.get(name)
            return [int(v) if v is not None else 0 for v in self._call(pipe.execute)]
        for start in range(0, len(names), self.MGET_BATCH):
            pipe.mget(names[start : start + self.MGET_BATCH])
        values: list[int] = []
        for chunk in self._call(pipe.execute):
            values.extend(int(v) if v is not None else 0 for v in chunk)
        return values

    def _call(self, method, *args):
        try:
            return method(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendUnavailable(f"Redis error: {exc}") from exc

    def _settle_args(self, ticket: Ticket, reserved: int, actual: int, now_ms: int | None):
        p = ticket.periods
        return [
            "" if now_ms is None else now_ms,
            ticket.member,
            reserved,
            actual,
            self.window_ms,
            p.day,
            p.month,
            p.day_expire_at,
            p.month_expire_at,
            ticket.tracks or "-",
        ]

    def settle(self, *, ticket: Ticket, reserved: int, actual: int, now_ms: int | None) -> None:
        args = self._settle_args(ticket, reserved, actual, now_ms)
        self._run(self._settle, self._keys(ticket), args)

    batches_settles = True

    def settle_many(self, items: list[tuple[Ticket, int, int]]) -> None:
        """Settle many admissions in one round trip (per node, on a cluster)."""
        calls = [
            (self._settle, self._keys(ticket), self._settle_args(ticket, reserved, actual, None))
            for ticket, reserved, actual in items
        ]
        try:
            results = run_scripts(self.client, calls, lane=self._lane)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis unreachable: {exc}") from exc
        except redis.RedisError as exc:
            log.exception("limits settle pipeline failed")
            raise BackendUnavailable(f"Redis error: {exc}") from exc
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            log.error("limits settle pipeline failed: %s", failed)
            raise BackendUnavailable(f"Redis error: {failed}") from failed
