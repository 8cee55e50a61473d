"""What both limit backends share: the limit set of a request, key names, the outcome of an
admission, and how an outcome becomes OpenAI's headers or a 429.

A backend only counts and decides (atomically); everything a customer reads (messages,
headers, Retry-After) is made here once, so Redis and the in-process backend answer alike.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.errors import QuotaExceeded, RateLimited
from metering.limits.keys import key_base, key_prefix, org_base  # noqa: F401 - re-exported

WINDOW_MS = 60_000  # RPM and TPM are sliding windows of one minute
UNLIMITED = -1

# The nine limits, in the order the Lua script receives them (ARGV 10-18).
LIMIT_NAMES = ("p_rpm", "k_rpm", "p_tpm", "k_tpm", "rpd", "tpd", "rpmo", "tpmo", "conc")
WINDOW_NAMES = ("p_rpm", "k_rpm", "p_tpm", "k_tpm")
PERIOD_NAMES = ("rpd", "tpd", "rpmo", "tpmo")
# A key's own day and month budgets (ARGV 21-24, counted under the key's base, KEYS 16-19).
KEY_PERIOD_NAMES = ("k_rpd", "k_tpd", "k_rpmo", "k_tpmo")
ALL_PERIOD_NAMES = PERIOD_NAMES + KEY_PERIOD_NAMES
DAY_NAMES = frozenset({"rpd", "tpd", "k_rpd", "k_tpd"})
TOKEN_PERIOD_NAMES = frozenset({"tpd", "tpmo", "k_tpd", "k_tpmo"})


class BackendUnavailable(Exception):
    """The counters cannot be reached (Redis down); the caller fails open or closed."""


class LimitsBackend:
    """Counts and decides. `admit` checks every limit and, only if all pass, counts the request;
    `settle` releases the slot and replaces the reservation; `status` reads without writing."""

    name = "base"

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
        raise NotImplementedError

    def settle(self, *, ticket: Ticket, reserved: int, actual: int, now_ms: int | None) -> None:
        raise NotImplementedError

    # A backend that can settle many admissions in one round trip says so and implements
    # settle_many; the others settle one by one.
    batches_settles = False

    def settle_many(self, items: list[tuple[Ticket, int, int]]) -> None:
        """Settle (ticket, reserved, actual) triples together (see `batches_settles`)."""
        raise NotImplementedError

    def release(self, *, ticket: Ticket) -> None:
        """Free the in-flight slot now; `settle` still corrects the tokens later."""
        raise NotImplementedError

    def renew(self, *, ticket: Ticket, deadline_ms: int, lease_ms: int) -> None:
        """Move a live request's slot lease and journal due time to `deadline_ms`."""
        raise NotImplementedError

    def count_refused(
        self, *, base: str, limit: int, now_ms: int, journal: JournalLine | None = None
    ) -> bool:
        """Count one refused request of a key in this minute; False once over `limit`. Within
        it, `journal` (the record to write if this process dies before its writer does) goes
        into the admission journal in the same round trip."""
        raise NotImplementedError

    def read_counters(self, names: list[str], *, now_ms: int) -> list[int]:
        """The values of day and month counters by key name (0 for a missing one), in as few
        round trips as the backend allows: readers off the request path (the notifications
        detector) read thousands of organizations at once."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class JournalLine:
    """An admission-journal entry: its member, the record (JSON) and when it falls due."""

    member: str
    line: str
    due_ms: int
    org_base: str  # whose journal it goes in (keys.journal): the organization's slot


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits of one request; None is unlimited (that check is skipped)."""

    plan_name: str | None
    p_rpm: int | None = None
    k_rpm: int | None = None
    p_tpm: int | None = None
    k_tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    rpmo: int | None = None
    tpmo: int | None = None
    conc: int | None = None
    k_rpd: int | None = None
    k_tpd: int | None = None
    k_rpmo: int | None = None
    k_tpmo: int | None = None

    @classmethod
    def of(cls, *, principal, plan) -> Limits:
        # Key caps narrow the plan: both counters apply (per organization and per key). No
        # plan at all means no plan limits; the key's own caps still hold.
        get = (lambda name: getattr(plan, name)) if plan is not None else (lambda name: None)
        return cls(
            plan_name=getattr(plan, "name", None),
            p_rpm=get("requests_per_minute"),
            p_tpm=get("tokens_per_minute"),
            k_rpm=getattr(principal, "requests_per_minute", None),
            k_tpm=getattr(principal, "tokens_per_minute", None),
            rpd=get("requests_per_day"),
            tpd=get("tokens_per_day"),
            rpmo=get("requests_per_month"),
            tpmo=get("tokens_per_month"),
            conc=get("max_concurrent_requests"),
            k_rpd=getattr(principal, "requests_per_day", None),
            k_tpd=getattr(principal, "tokens_per_day", None),
            k_rpmo=getattr(principal, "requests_per_month", None),
            k_tpmo=getattr(principal, "tokens_per_month", None),
        )

    def as_args(self) -> list[int]:
        """The nine plan and per-minute limits (ARGV 10-18)."""
        return [
            UNLIMITED if getattr(self, n) is None else int(getattr(self, n)) for n in LIMIT_NAMES
        ]

    def key_budget_args(self) -> list[int]:
        """The key's day and month budgets (ARGV 21-24)."""
        return [
            UNLIMITED if getattr(self, n) is None else int(getattr(self, n))
            for n in KEY_PERIOD_NAMES
        ]


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC calendar day and month a request counts in, and when they end."""

    day: str
    month: str
    day_end: datetime
    month_end: datetime

    @classmethod
    def at(cls, now_ms: int) -> Periods:
        # Once per UTC day, not per admission (~12 us of datetime arithmetic and strftime)
        return _periods_of_day(now_ms // DAY_MS)

    @property
    def day_expire_at(self) -> int:
        # Kept one day past the boundary so a request admitted at 23:59 settles into its day.
        return int(self.day_end.timestamp()) + 86_400

    @property
    def month_expire_at(self) -> int:
        return int(self.month_end.timestamp()) + 86_400


DAY_MS = 86_400_000  # a UTC day: Unix time has no leap seconds


@functools.lru_cache(maxsize=4)
def _periods_of_day(day: int) -> Periods:
    day_start = datetime.fromtimestamp(day * (DAY_MS // 1000), tz=UTC)
    month_start = day_start.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    return Periods(
        day=day_start.strftime("%Y%m%d"),
        month=day_start.strftime("%Y%m"),
        day_end=day_start + timedelta(days=1),
        month_end=month_end,
    )


@dataclass(frozen=True, slots=True)
class Ticket:
    """Everything settle needs to undo or correct what admit did, and nothing else."""

    org_base: str  # the organization's counters: the plan's limits, shared by its keys
    key_base: str
    member: str  # unique per admission: the request id plus a nonce
    periods: Periods
    tracks: str  # letters: c = in-flight slot, p = plan TPM log, k = key TPM log


@dataclass(slots=True)
class LimitsVerdict:
    admitted: bool
    now_ms: int
    inflight: int = 0
    used: dict[str, int] = field(default_factory=dict)  # every limit name -> count
    reset_ms: dict[str, int] = field(default_factory=dict)  # windows: until the window is empty
    retry_ms: dict[str, int] = field(default_factory=dict)  # windows: until this one fits, -1 never
    failed: tuple[str, ...] = ()


# --- turning an outcome into headers and errors ------------------------------------------------


def format_reset(ms: int) -> str:
    """OpenAI's reset format: '20ms', '1.5s', '6m0s', '1h2m3s'."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{round(ms / 1000, 3):g}s"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes}m{seconds}s" if hours else f"{minutes}m{seconds}s"


def period_reset_ms(name: str, now_ms: int) -> int:
    """Milliseconds until the UTC day or month that a period counter counts ends."""
    periods = Periods.at(now_ms)
    end = periods.day_end if name in DAY_NAMES else periods.month_end
    return max(0, int(end.timestamp() * 1000) - now_ms)


def _binding(
    limits: Limits, outcome: LimitsVerdict, names: tuple[str, ...]
) -> tuple[int, int, int] | None:
    """(limit, remaining, reset_ms) of whichever of the limits named binds: the fewest left."""
    best = None
    for name in names:
        limit = getattr(limits, name)
        if limit is None:
            continue
        remaining = max(0, limit - outcome.used.get(name, 0))
        reset = (
            period_reset_ms(name, outcome.now_ms)
            if name in KEY_PERIOD_NAMES
            else outcome.reset_ms.get(name, 0)
        )
        candidate = (remaining, limit, reset)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    if best is None:
        return None
    remaining, limit, reset = best
    return limit, remaining, reset


# The limits each x-ratelimit-* trio may speak for: the per-minute windows and the key's own
# budgets, whichever binds (the fewest left).
_HEADER_LIMITS = {
    "requests": ("p_rpm", "k_rpm", "k_rpd", "k_rpmo"),
    "tokens": ("p_tpm", "k_tpm", "k_tpd", "k_tpmo"),
}


def rate_headers(limits: Limits, outcome: LimitsVerdict) -> dict[str, str]:
    """The x-ratelimit-* headers. A trio is left out when no limit of its kind applies: there is
    nothing true to say about a limit that does not exist."""
    headers: dict[str, str] = {}
    for kind, names in _HEADER_LIMITS.items():
        bound = _binding(limits, outcome, names)
        if bound is None:
            continue
        limit, remaining, reset = bound
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        headers[f"x-ratelimit-reset-{kind}"] = format_reset(reset)
    return headers


_KEY_BUDGET_FIELDS = {
    "k_rpd": "requests_per_day",
    "k_tpd": "tokens_per_day",
    "k_rpmo": "requests_per_month",
    "k_tpmo": "tokens_per_month",
}


def _whose(limits: Limits, name: str) -> str:
    if name.startswith("k_"):
        return "for this API key"
    return f"for your plan '{limits.plan_name}'"


def rejection(
    limits: Limits, outcome: LimitsVerdict, *, reserve: int
) -> RateLimited | QuotaExceeded:
    """The error for a refused admission: the limit that keeps the caller waiting longest.
    Its record_detail names that limit, for the usage record (staff count refusals by it)."""
    error = _rejection(limits, outcome, reserve=reserve)
    error.record_detail = _longest_wait(outcome)[0]
    return error


def _longest_wait(outcome: LimitsVerdict) -> tuple[str, int]:
    """The refused limit the caller waits longest for, and that wait in milliseconds."""
    periods = Periods.at(outcome.now_ms)
    now = datetime.fromtimestamp(outcome.now_ms / 1000, tz=UTC)
    waits: dict[str, int] = {}
    for name in outcome.failed:
        if name in outcome.retry_ms:
            retry = outcome.retry_ms[name]
            waits[name] = WINDOW_MS if retry < 0 else retry
        elif name in DAY_NAMES:
            waits[name] = int((periods.day_end - now).total_seconds() * 1000)
        elif name in ("rpmo", "tpmo", "k_rpmo", "k_tpmo"):
            waits[name] = int((periods.month_end - now).total_seconds() * 1000)
        else:  # concurrency: a slot frees when any request ends; nothing better to promise
            waits[name] = 1000
    name = max(waits, key=lambda n: waits[n])
    return name, waits[name]


def _rejection(
    limits: Limits, outcome: LimitsVerdict, *, reserve: int
) -> RateLimited | QuotaExceeded:
    periods = Periods.at(outcome.now_ms)
    name, wait_ms = _longest_wait(outcome)
    wait_ms = max(1, wait_ms)
    retry_after = max(1, math.ceil(wait_ms / 1000))
    headers = {**rate_headers(limits, outcome), "Retry-After": str(retry_after)}
    limit = getattr(limits, name)
    used = outcome.used.get(name, 0)
    whose = _whose(limits, name)
    if name == "conc":
        return RateLimited(
            f"Too many concurrent requests: {limit} at a time {whose}. Retry when one of your "
            f"requests in flight has finished (after about {retry_after}s).",
            headers=headers,
        )
    if name in ("p_rpm", "k_rpm"):
        return RateLimited(
            f"Rate limit reached: {limit} requests per minute {whose}. Retry after {retry_after}s.",
            headers=headers,
        )
    if name in ("p_tpm", "k_tpm"):
        if outcome.retry_ms.get(name, 0) < 0:
            # No wait makes it fit: no Retry-After, and the SDKs are told not to retry.
            return RateLimited(
                f"Request too large: it reserves {reserve} tokens (max_tokens plus the prompt), "
                f"more than the limit of {limit} tokens per minute {whose}. Lower max_tokens.",
                headers={**rate_headers(limits, outcome), "x-should-retry": "false"},
            )
        return RateLimited(
            f"Rate limit reached: {limit} tokens per minute {whose} ({used} used or reserved, "
            f"this request reserves {reserve}). Retry after {retry_after}s.",
            headers=headers,
        )
    unit = "requests" if name in ("rpd", "rpmo", "k_rpd", "k_rpmo") else "tokens"
    span, end = ("day", periods.day_end) if name in DAY_NAMES else ("month", periods.month_end)
    resets = f"It resets at {end:%Y-%m-%d %H:%M} UTC (in {format_reset(wait_ms)})."
    if name in KEY_PERIOD_NAMES:
        # The key's own budget, not the plan's quota: its holder can raise it on the key's page
        # (or use another key), so say whose it is and which.
        daily = "daily" if span == "day" else "monthly"
        unit_one = unit[:-1]
        if unit == "tokens" and reserve > limit:
            return QuotaExceeded(
                f"Request too large: it reserves {reserve} tokens, more than this key's whole "
                f"{daily} token budget of {limit}. Lower max_tokens or raise the key's budget.",
                param=_KEY_BUDGET_FIELDS[name],
                headers={**rate_headers(limits, outcome), "x-should-retry": "false"},
            )
        return QuotaExceeded(
            f"Budget reached: this key's {daily} {unit_one} budget of {limit} {unit} is spent "
            f"({used} used). {resets} The organization's plan is not exhausted: another key, "
            "or a higher budget on this key's page, can go on.",
            param=_KEY_BUDGET_FIELDS[name],
            headers={**headers, "x-should-retry": "false"},
        )
    if unit == "tokens" and reserve > limit:
        return QuotaExceeded(
            f"Request too large: it reserves {reserve} tokens, more than your whole quota of "
            f"{limit} tokens per {span} {whose}. Lower max_tokens.",
            headers={**rate_headers(limits, outcome), "x-should-retry": "false"},
        )
    # A day's or month's quota: the SDKs' retries (seconds apart) cannot outwait its reset.
    return QuotaExceeded(
        f"Quota reached: {limit} {unit} per {span} {whose} ({used} used). {resets}",
        headers={**headers, "x-should-retry": "false"},
    )
