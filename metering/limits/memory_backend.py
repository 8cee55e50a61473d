"""Limits inside one process (the embedded default, no Redis): same semantics as admit.lua and
settle.lua, made atomic by one lock. Counters live only in this process, so this backend is
exact for a single-process server only; production uses Redis."""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

from metering.limits.base import (
    ALL_PERIOD_NAMES,
    DAY_NAMES,
    TOKEN_PERIOD_NAMES,
    WINDOW_MS,
    WINDOW_NAMES,
    Limits,
    LimitsBackend,
    LimitsVerdict,
    Ticket,
)


@dataclass(slots=True)
class _Log:
    """A sliding log: (admitted_at, member) in time order, and tokens per member."""

    entries: list[tuple[int, str]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def prune(self, cutoff: int) -> None:
        cut = bisect.bisect_right(self.entries, (cutoff, "\uffff"))
        for _, member in self.entries[:cut]:
            self.total -= self.tokens.pop(member, 0)
        del self.entries[:cut]

    def add(self, at: int, member: str, tokens: int = 0) -> None:
        bisect.insort(self.entries, (at, member))
        self.tokens[member] = tokens
        self.total += tokens


class MemoryBackend(LimitsBackend):
    name = "memory"

    def __init__(self, *, window_ms: int = WINDOW_MS):
        self.window_ms = window_ms
        self._lock = threading.Lock()
        self._logs: dict[str, _Log] = {}
        self._inflight: dict[str, dict[str, int]] = {}
        self._counters: dict[str, tuple[int, int]] = {}  # key -> (value, expire_at seconds)

    # --- helpers (called with the lock held) ---------------------------------------------------
    def _log(self, key: str) -> _Log:
        return self._logs.setdefault(key, _Log())

    def _get(self, key: str, now_ms: int) -> int:
        value, expire_at = self._counters.get(key, (0, 0))
        return value if expire_at * 1000 > now_ms else 0

    def _incr(self, key: str, by: int, expire_at: int, now_ms: int) -> None:
        self._counters[key] = (max(0, self._get(key, now_ms) + by), expire_at)

    @staticmethod
    def _period_keys(ticket: Ticket) -> dict[str, str]:
        p = ticket.periods
        names = {}
        for prefix, base in (("", ticket.org_base), ("k_", ticket.key_base)):
            names[f"{prefix}rpd"] = f"{base}:rd:{p.day}"
            names[f"{prefix}tpd"] = f"{base}:td:{p.day}"
            names[f"{prefix}rpmo"] = f"{base}:rm:{p.month}"
            names[f"{prefix}tpmo"] = f"{base}:tm:{p.month}"
        return names

    # --- the backend ----------------------------------------------------------------------------
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
        """What admit.lua does, in the same order: check every limit, and only when none
        failed (and not dry) take a slot, log the request and its tokens, count the periods."""
        with self._lock:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            out = LimitsVerdict(admitted=False, now_ms=now)
            failed: list[str] = []
            lim = {
                name: getattr(limits, name) for name in (*WINDOW_NAMES, *ALL_PERIOD_NAMES, "conc")
            }
            slots = self._check_inflight(ticket, lim, now, out, failed)
            logs = self._check_windows(ticket, lim, reserve, now, out, failed)
            cost = {name: reserve if name in TOKEN_PERIOD_NAMES else 1 for name in ALL_PERIOD_NAMES}
            period_keys = self._check_periods(ticket, lim, cost, now, out, failed)
            out.failed = tuple(failed)
            out.admitted = not failed and not dry
            if out.admitted:
                self._take(ticket, lim, reserve, lease_ms, now, out, slots, logs)
                self._count_periods(ticket, period_keys, cost, now, out)
            out.used["conc"] = out.inflight
            return out

    def _check_inflight(
        self, ticket: Ticket, lim: dict, now: int, out: LimitsVerdict, failed: list[str]
    ) -> dict[str, int]:
        """The user's in-flight slots (expired leases dropped); "conc" fails when all taken."""
        slots = self._inflight.setdefault(f"{ticket.org_base}:inflight", {})
        if lim["conc"] is not None:
            for member in [m for m, deadline in slots.items() if deadline <= now]:
                del slots[member]
            out.inflight = len(slots)
            if out.inflight >= lim["conc"]:
                failed.append("conc")
        return slots

    def _check_windows(
        self,
        ticket: Ticket,
        lim: dict,
        reserve: int,
        now: int,
        out: LimitsVerdict,
        failed: list[str],
    ) -> dict[str, _Log]:
        """The per-minute windows (user and key, requests and tokens): used, reset, retry."""
        W = self.window_ms
        base = {
            "p_rpm": ticket.org_base,
            "k_rpm": ticket.key_base,
            "p_tpm": ticket.org_base,
            "k_tpm": ticket.key_base,
        }
        logs: dict[str, _Log] = {}
        for name in WINDOW_NAMES:
            if lim[name] is None:
                out.used[name] = out.reset_ms[name] = out.retry_ms[name] = 0
                continue
            log = logs[name] = self._log(base[name] + (":rpm" if "rpm" in name else ":tpm"))
            log.prune(now - W)  # pruning is invisible to readers, so dry runs may do it too
            newest = log.entries[-1][0] if log.entries else None
            out.reset_ms[name] = newest + W - now if newest is not None else 0
            out.retry_ms[name] = 0
            if "rpm" in name:
                used = out.used[name] = len(log.entries)
                if used >= lim[name]:
                    failed.append(name)
                    out.retry_ms[name] = log.entries[used - lim[name]][0] + W - now if used else W
            else:
                used = out.used[name] = max(0, log.total)
                if used >= lim[name] or used + reserve > lim[name]:
                    failed.append(name)
                    out.retry_ms[name] = self._tokens_retry(log, used, reserve, lim[name], now)
        return logs

    def _check_periods(
        self,
        ticket: Ticket,
        lim: dict,
        cost: dict[str, int],
        now: int,
        out: LimitsVerdict,
        failed: list[str],
    ) -> dict[str, str]:
        """The day and month quotas (the plan's and the key's budgets): fail when this
        request's cost would pass one."""
        period_keys = self._period_keys(ticket)
        for name in ALL_PERIOD_NAMES:
            used = out.used[name] = self._get(period_keys[name], now)
            if lim[name] is not None and (used >= lim[name] or used + cost[name] > lim[name]):
                failed.append(name)
        return period_keys

    def _take(
        self,
        ticket: Ticket,
        lim: dict,
        reserve: int,
        lease_ms: int,
        now: int,
        out: LimitsVerdict,
        slots: dict[str, int],
        logs: dict[str, _Log],
    ) -> None:
        """Admitted: take the slot, log the request and its reserved tokens in each window."""
        if lim["conc"] is not None:
            slots[ticket.member] = now + lease_ms
            out.inflight += 1
        for name, log in logs.items():
            if "rpm" in name:
                log.add(now, ticket.member)
                out.used[name] += 1
            elif reserve > 0:  # as in admit.lua: nothing reserved, nothing logged
                log.add(now, ticket.member, reserve)
                out.used[name] += reserve
            else:
                continue
            out.reset_ms[name] = self.window_ms

    def _count_periods(
        self,
        ticket: Ticket,
        period_keys: dict[str, str],
        cost: dict[str, int],
        now: int,
        out: LimitsVerdict,
    ) -> None:
        p = ticket.periods
        for name in ALL_PERIOD_NAMES:
            expire_at = p.day_expire_at if name in DAY_NAMES else p.month_expire_at
            self._incr(period_keys[name], cost[name], expire_at, now)
            out.used[name] += cost[name]

    def _tokens_retry(self, log: _Log, used: int, reserve: int, limit: int, now: int) -> int:
        if reserve > limit:
            return -1
        need, freed = used + reserve - limit, 0
        for at, member in log.entries:
            freed += log.tokens.get(member, 0)
            if freed >= need:
                return at + self.window_ms - now
        return self.window_ms

    def settle(self, *, ticket: Ticket, reserved: int, actual: int, now_ms: int | None) -> None:
        with self._lock:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            delta = actual - reserved
            if "c" in ticket.tracks:
                self._inflight.get(f"{ticket.org_base}:inflight", {}).pop(ticket.member, None)
            if delta:
                keys, p = self._period_keys(ticket), ticket.periods
                for name in ("tpd", "k_tpd"):
                    self._incr(keys[name], delta, p.day_expire_at, now)
                for name in ("tpmo", "k_tpmo"):
                    self._incr(keys[name], delta, p.month_expire_at, now)
            for letter, b in (("p", ticket.org_base), ("k", ticket.key_base)):
                if letter not in ticket.tracks:
                    continue
                log = self._log(f"{b}:tpm")
                if ticket.member in log.tokens:
                    log.tokens[ticket.member] += delta
                    log.total += delta
                elif delta > 0:  # the reservation already left the window: count from now
                    log.add(now, f"{ticket.member}:over", delta)

    def release(self, *, ticket: Ticket) -> None:
        with self._lock:
            self._inflight.get(f"{ticket.org_base}:inflight", {}).pop(ticket.member, None)

    def renew(self, *, ticket: Ticket, deadline_ms: int, lease_ms: int) -> None:
        with self._lock:
            slots = self._inflight.get(f"{ticket.org_base}:inflight", {})
            if ticket.member in slots:
                slots[ticket.member] = deadline_ms

    def count_refused(self, *, base: str, limit: int, now_ms: int, journal=None) -> bool:
        # No journal in memory: it would die with the process it guards against.
        with self._lock:
            name = f"{base}:refused:{now_ms // WINDOW_MS}"
            expire_at = (now_ms // WINDOW_MS + 2) * WINDOW_MS // 1000
            self._counters[name] = (self._get(name, now_ms) + 1, expire_at)
            return self._counters[name][0] <= limit

    def read_counters(self, names: list[str], *, now_ms: int) -> list[int]:
        with self._lock:
            return [self._get(name, now_ms) for name in names]

    def clear(self) -> None:
        with self._lock:
            self._logs.clear()
            self._inflight.clear()
            self._counters.clear()
