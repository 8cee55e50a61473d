"""Plans, rate limits and quotas: the admission of one /v1/ request and its settlement.

    adm = limits_admit(principal=principal, plan=plan, reserve_tokens=n, request_id=rid)
    ...                                  # answer the request, with adm.headers
    adm.settle(total_tokens=actual)      # in a finally: however the request ended

Per organization (its plan, shared by all its keys): requests and tokens per minute (sliding
one-minute windows), per UTC day and per UTC month, and requests in flight. Per key: its own
requests and tokens per minute, which narrow the plan (both counters apply). None is
unlimited. Tokens are reserved at admission and settled to the real count, so a quota is
overrun by at most what was in flight.

Backend: Redis (one EVALSHA per admission) when REDIS_URL is set, else this process's memory.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from apikeys.services import KeyPrincipal
from catalog.routing import PlanInfo
from core.errors import ServiceUnavailable
from core.redis import direct_lane, get_redis
from metering.limits import keys
from metering.limits.base import (
    PERIOD_NAMES,
    BackendUnavailable,
    Limits,
    LimitsBackend,
    LimitsVerdict,
    Periods,
    Ticket,
    key_base,
    org_base,
    rate_headers,
    rejection,
)
from metering.limits.memory_backend import MemoryBackend
from metering.limits.redis_backend import RedisBackend

log = logging.getLogger(__name__)

__all__ = [
    "Admission",
    "BackendUnavailable",
    "LimitsBackend",
    "get_backend",
    "limits_admit",
    "limits_headers",
    "limits_key_period_usage_many",
    "limits_key_usage",
    "limits_period_usage_many",
    "limits_settle_many",
    "limits_status",
]

_backends: dict[str | None, LimitsBackend] = {}
_backends_lock = threading.Lock()


def get_backend() -> LimitsBackend:
    """Redis when REDIS_URL is set, else one in-process backend shared by this process."""
    url = settings.REDIS_URL
    backend = _backends.get(url)
    if backend is None:
        with _backends_lock:
            backend = _backends.get(url)
            if backend is None:
                backend = _redis_backend() if url else MemoryBackend()
                _backends[url] = backend
    return backend


def _redis_backend() -> RedisBackend:
    client = get_redis()
    return RedisBackend(client, lane=direct_lane(client))


class Admission:
    """An admitted request: its headers, and `settle` to call once it has ended."""

    __slots__ = (
        "_admitted_at",
        "_backend",
        "_lock",
        "_now_ms",
        "_released",
        "_settled",
        "headers",
        "lease_ms",
        "request_id",
        "reserved",
        "server_ms",
        "ticket",
    )

    def __init__(
        self,
        *,
        backend: LimitsBackend | None,
        ticket: Ticket | None,
        reserved: int,
        headers: dict[str, str],
        request_id: str,
        now_ms: int | None = None,
        server_ms: int | None = None,
        lease_ms: int = 0,
    ):
        self._backend = backend
        self.ticket = ticket
        self.reserved = reserved
        self.headers = headers
        self.request_id = request_id
        self._now_ms = now_ms
        self._settled = False
        self._released = False
        self._lock = threading.Lock()
        # The backend's clock at admission, and ours: a lease is renewed on the backend's clock
        # (the one the slot's deadline was set on) without asking it the time again.
        self.server_ms = server_ms
        self.lease_ms = lease_ms
        self._admitted_at = time.monotonic()

    @property
    def settled(self) -> bool:
        return self._settled

    def claim_settle(self) -> bool:
        """Mark this admission settled; True only for the first caller (who must settle it)."""
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            return True

    def release(self) -> None:
        """Free the in-flight slot now (the client has its answer); the tokens and the journal
        entry are settled later, once the record is written. Idempotent, never raises."""
        if self._released or self._settled or self._backend is None or self.ticket is None:
            return
        self._released = True
        try:
            self._backend.release(ticket=self.ticket)
        except Exception as exc:  # the lease frees the slot on its own
            log.warning("limits release failed for %s: %s", self.request_id, exc)

    def renew(self) -> None:
        """Push back this request's slot lease and journal due time by a whole lease: it is
        still being served (a long stream). Never raises."""
        if self._settled or self._backend is None or self.ticket is None or not self.lease_ms:
            return
        if self.server_ms is None:
            return
        elapsed_ms = int((time.monotonic() - self._admitted_at) * 1000)
        deadline = self.server_ms + elapsed_ms + self.lease_ms
        try:
            self._backend.renew(ticket=self.ticket, deadline_ms=deadline, lease_ms=self.lease_ms)
        except Exception as exc:
            log.warning("limits lease renewal failed for %s: %s", self.request_id, exc)

    def settle(self, *, total_tokens: int, _now_ms: int | None = None) -> None:
        """Release the in-flight slot and count `total_tokens` instead of the reservation.
        Idempotent, and never raises: it runs in finally blocks and generator cleanups."""
        if not self.claim_settle():
            return
        if self._backend is None or self.ticket is None:  # admitted open while Redis was down
            return
        now_ms = _now_ms if _now_ms is not None else self._now_ms
        try:
            self._backend.settle(
                ticket=self.ticket,
                reserved=self.reserved,
                actual=max(0, int(total_tokens or 0)),
                now_ms=now_ms,
            )
        except BackendUnavailable as exc:
            # The in-flight lease frees the slot on its own; the reservation stays counted
            # (conservative) until `limits_rebuild` or the next period.
            log.warning("limits settle failed for %s: %s", self.request_id, exc)
        except Exception:
            log.exception("limits settle failed for %s", self.request_id)


def limits_settle_many(items: list[tuple[Admission, int]]) -> None:
    """Settle many admissions (with their real token counts) in as few round trips as the
    backend allows: one pipeline for Redis. Never raises; each admission settles once."""
    batched: dict[int, tuple[LimitsBackend, list]] = {}
    for admission, total_tokens in items:
        if not admission.claim_settle():
            continue
        backend, ticket = admission._backend, admission.ticket
        if backend is None or ticket is None:
            continue
        actual = max(0, int(total_tokens or 0))
        if backend.batches_settles:
            batched.setdefault(id(backend), (backend, []))[1].append(
                (ticket, admission.reserved, actual)
            )
            continue
        try:
            backend.settle(
                ticket=ticket, reserved=admission.reserved, actual=actual, now_ms=admission._now_ms
            )
        except Exception:
            log.exception("limits settle failed for %s", admission.request_id)
    for backend, group in batched.values():
        try:
            backend.settle_many(group)
        except Exception as exc:  # the leases free the slots; reservations stay counted
            log.warning("limits settle of %d admissions failed: %s", len(group), exc)


def _ticket(*, org_id: int, key_id: int | None, member: str, limits: Limits, now_ms: int) -> Ticket:
    tracks = (
        ("c" if limits.conc is not None else "")
        + ("p" if limits.p_tpm is not None else "")
        + ("k" if limits.k_tpm is not None else "")
    )
    return Ticket(
        org_base=org_base(org_id),
        key_base=key_base(org_id, key_id),
        member=member,
        periods=Periods.at(now_ms),
        tracks=tracks,
    )


def limits_admit(
    *,
    principal: KeyPrincipal,
    plan: PlanInfo | None,
    reserve_tokens: int,
    request_id: str,
    backend: LimitsBackend | None = None,
    lease_seconds: int | None = None,
    journal: str = "",
    _now_ms: int | None = None,
) -> Admission:
    """Admit one request or raise RateLimited / QuotaExceeded (429) or ServiceUnavailable (503).

    One backend call and no database query: `principal` and `plan` come from caches."""
    backend = backend or get_backend()
    limits = Limits.of(principal=principal, plan=plan)
    reserve = max(0, int(reserve_tokens or 0))
    lease: int = lease_seconds or settings.LIMITS_INFLIGHT_LEASE_SECONDS
    # Calendar periods come from this clock (see redis_backend); the windows from the backend's.
    clock_ms = _now_ms if _now_ms is not None else int(time.time() * 1000)
    ticket = _ticket(
        org_id=principal.org_id,
        key_id=principal.key_id,
        member=f"{request_id}:{secrets.token_hex(4)}",
        limits=limits,
        now_ms=clock_ms,
    )
    try:
        outcome = backend.admit(
            ticket=ticket,
            limits=limits,
            reserve=reserve,
            lease_ms=int(lease * 1000),
            now_ms=_now_ms,
            journal=journal,
        )
    except BackendUnavailable as exc:
        if settings.LIMITS_FAIL_OPEN:
            log.warning("limits backend unavailable, admitting without limits (fail open): %s", exc)
            return Admission(
                backend=None, ticket=None, reserved=reserve, headers={}, request_id=request_id
            )
        log.error("limits backend unavailable, refusing (fail closed): %s", exc)
        raise ServiceUnavailable(
            "The service cannot check your rate limits right now, so it is not accepting "
            "requests. Please retry in a few seconds.",
            headers={"Retry-After": "5"},
        ) from exc
    if not outcome.admitted:
        raise rejection(limits, outcome, reserve=reserve)
    return Admission(
        backend=backend,
        ticket=ticket,
        reserved=reserve,
        headers=rate_headers(limits, outcome),
        request_id=request_id,
        now_ms=_now_ms,
        server_ms=outcome.now_ms,
        lease_ms=int(lease * 1000),
    )


def limits_status(
    *,
    principal: KeyPrincipal | None = None,
    plan: PlanInfo | None,
    org_id: int | None = None,
    backend: LimitsBackend | None = None,
    _now_ms: int | None = None,
) -> dict:
    """Each limit's `limit`, `used`, `remaining` and `reset_at` (UTC), admitting nothing.

    `principal` is an API key's principal (its caps count); pass `org_id` instead for an
    organization without a key in hand (the dashboard). Raises BackendUnavailable when Redis
    is down. Per-minute `used` for a plan and a key cap: the tighter of the two."""
    backend = backend or get_backend()
    if principal is None:
        if org_id is None:
            raise TypeError("limits_status needs a principal or an org_id")
        limits = Limits.of(principal=None, plan=plan)
        key_id = None
    else:
        org_id = principal.org_id
        limits = Limits.of(principal=principal, plan=plan)
        key_id = principal.key_id
    clock_ms = _now_ms if _now_ms is not None else int(time.time() * 1000)
    ticket = _ticket(org_id=org_id, key_id=key_id, member="", limits=limits, now_ms=clock_ms)
    outcome = backend.admit(
        ticket=ticket, limits=limits, reserve=0, lease_ms=0, now_ms=_now_ms, dry=True
    )
    return _status(limits, outcome, ticket.periods)


def limits_key_usage(
    *, org_id: int, key_id: int, backend: LimitsBackend | None = None, _now_ms: int | None = None
) -> dict[str, Any]:
    """A key's own counters (what its budgets are checked against): requests and tokens this
    UTC day and month, and when each resets. One read-only backend call, admitting nothing;
    raises BackendUnavailable when Redis is down."""
    backend = backend or get_backend()
    limits = Limits(plan_name=None)
    clock_ms = _now_ms if _now_ms is not None else int(time.time() * 1000)
    ticket = _ticket(org_id=org_id, key_id=key_id, member="", limits=limits, now_ms=clock_ms)
    outcome = backend.admit(
        ticket=ticket, limits=limits, reserve=0, lease_ms=0, now_ms=_now_ms, dry=True
    )
    return {
        "requests_per_day": outcome.used["k_rpd"],
        "tokens_per_day": outcome.used["k_tpd"],
        "requests_per_month": outcome.used["k_rpmo"],
        "tokens_per_month": outcome.used["k_tpmo"],
        "day_resets_at": ticket.periods.day_end,
        "month_resets_at": ticket.periods.month_end,
    }


def limits_period_usage_many(
    *,
    org_ids: list[int],
    backend: LimitsBackend | None = None,
    _now_ms: int | None = None,
) -> tuple[Periods, dict[int, dict[str, int]]]:
    """This day's and month's plan counters (`rpd`, `tpd`, `rpmo`, `tpmo`) of many
    organizations, read without admitting anything in one batched read (MGET, not a round trip
    per organization). Tokens include reservations of requests still in flight, as admission
    sees them. Raises BackendUnavailable when Redis is down."""
    backend = backend or get_backend()
    now_ms = _now_ms if _now_ms is not None else int(time.time() * 1000)
    periods = Periods.at(now_ms)
    names = [
        keys.period(org_base(org_id), name, periods.day, periods.month)
        for org_id in org_ids
        for name in PERIOD_NAMES
    ]
    values = backend.read_counters(names, now_ms=now_ms)
    width = len(PERIOD_NAMES)
    return periods, {
        org_id: dict(zip(PERIOD_NAMES, values[i * width : (i + 1) * width], strict=True))
        for i, org_id in enumerate(org_ids)
    }


def limits_key_period_usage_many(
    *,
    keys_of: list[tuple[int, int]],
    backend: LimitsBackend | None = None,
    _now_ms: int | None = None,
) -> tuple[Periods, dict[int, dict[str, int]]]:
    """The day's and month's own counters of many keys (what their budgets are checked
    against), by key id: `keys_of` is (org_id, key_id) pairs. One batched read, admitting
    nothing; raises BackendUnavailable when Redis is down."""
    backend = backend or get_backend()
    now_ms = _now_ms if _now_ms is not None else int(time.time() * 1000)
    periods = Periods.at(now_ms)
    names = [
        keys.period(key_base(org_id, key_id), name, periods.day, periods.month)
        for org_id, key_id in keys_of
        for name in PERIOD_NAMES
    ]
    values = backend.read_counters(names, now_ms=now_ms)
    width = len(PERIOD_NAMES)
    return periods, {
        key_id: dict(zip(PERIOD_NAMES, values[i * width : (i + 1) * width], strict=True))
        for i, (_, key_id) in enumerate(keys_of)
    }


def limits_headers(*, principal: KeyPrincipal, plan: PlanInfo | None) -> dict[str, str]:
    """The x-ratelimit-* headers for a response that admitted nothing (model lists, usage,
    refused input): one read-only backend call; {} if the backend is unreachable."""
    limits = Limits.of(principal=principal, plan=plan)
    ticket = _ticket(
        org_id=principal.org_id,
        key_id=principal.key_id,
        member="",
        limits=limits,
        now_ms=int(time.time() * 1000),
    )
    try:
        outcome = get_backend().admit(
            ticket=ticket, limits=limits, reserve=0, lease_ms=0, now_ms=None, dry=True
        )
    except BackendUnavailable:
        return {}
    return rate_headers(limits, outcome)


def _status(limits: Limits, outcome: LimitsVerdict, periods: Periods) -> dict[str, Any]:
    now = datetime.fromtimestamp(outcome.now_ms / 1000, tz=UTC)

    def entry(limit: int | None, used: int | None, reset_at: datetime | None) -> dict[str, Any]:
        remaining = None if limit is None or used is None else max(0, limit - used)
        return {"limit": limit, "used": used, "remaining": remaining, "reset_at": reset_at}

    def window(names: tuple[str, ...]) -> dict[str, Any]:
        candidates = [
            (max(0, getattr(limits, n) - outcome.used[n]), n)
            for n in names
            if getattr(limits, n) is not None
        ]
        if not candidates:
            return entry(None, None, None)
        name = min(candidates)[1]
        return entry(
            getattr(limits, name),
            outcome.used[name],
            now + timedelta(milliseconds=outcome.reset_ms.get(name, 0)),
        )

    def period(plan_name: str, key_name: str, reset_at: datetime) -> dict[str, Any]:
        # The plan's quota (the organization's count) or the key's own budget (its count):
        # whichever leaves fewer; with neither, the organization's count and no limit.
        candidates = [
            (max(0, getattr(limits, n) - outcome.used.get(n, 0)), getattr(limits, n), n)
            for n in (plan_name, key_name)
            if getattr(limits, n) is not None
        ]
        name = min(candidates)[2] if candidates else plan_name
        return entry(getattr(limits, name), outcome.used.get(name, 0), reset_at)

    return {
        "requests_per_minute": window(("p_rpm", "k_rpm")),
        "tokens_per_minute": window(("p_tpm", "k_tpm")),
        "requests_per_day": period("rpd", "k_rpd", periods.day_end),
        "tokens_per_day": period("tpd", "k_tpd", periods.day_end),
        "requests_per_month": period("rpmo", "k_rpmo", periods.month_end),
        "tokens_per_month": period("tpmo", "k_tpmo", periods.month_end),
        "max_concurrent_requests": entry(
            limits.conc, outcome.inflight if limits.conc is not None else None, None
        ),
    }
