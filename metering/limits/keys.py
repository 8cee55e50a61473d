"""Every Redis key name metering uses, in one place, under the deployment's prefix.

Two deployments may share one Redis database: each names its keys under its own
CACHE_KEY_PREFIX (or LIMITS_KEY_PREFIX), so neither reads the other's counters, admission
journal or spool. The braces are Redis Cluster hash tags: keys one Lua script touches together
share a tag and so land in one slot: `{o<id>}` for everything one admission touches (the
organization's counters, its keys' counters, its admission journal), `{<prefix>:usage}` for
the spool, its claims and the journal index.
"""

from __future__ import annotations

import functools

from django.conf import settings


def prefix() -> str:
    value = settings.LIMITS_KEY_PREFIX
    if not value:
        value = settings.CACHES.get("default", {}).get("KEY_PREFIX") or "portal"
    return str(value)


def key_prefix() -> str:
    return f"{prefix()}:lim"


def org_base(org_id: int) -> str:
    # Every counter of one organization (and of its keys) carries its tag: one slot. The plan's
    # limits count here, shared by all the organization's keys.
    return f"{key_prefix()}:{{o{org_id}}}"


def legacy_user_base(user_id: int) -> str:
    """Where plan counters lived before organizations (per user); only the migration that
    carries them over (metering 0007) reads these."""
    return f"{key_prefix()}:{{u{user_id}}}"


def key_base(org_id: int, key_id: int | None) -> str:
    return f"{org_base(org_id)}:k{key_id if key_id is not None else 0}"


def inflight(org_base_: str) -> str:
    return f"{org_base_}:inflight"


def period(org_base_: str, name: str, day: str, month: str) -> str:
    """A day or month counter: rpd, tpd (requests, tokens per day), rpmo, tpmo (per month).
    Under a key's base (`key_base`) the same names are that key's own counters."""
    kind = {"rpd": "rd", "tpd": "td", "rpmo": "rm", "tpmo": "tm"}[name]
    return f"{org_base_}:{kind}:{day if name in ('rpd', 'tpd') else month}"


def key_periods(key_base_: str, day: str, month: str) -> list[str]:
    """A key's own day and month counters (its budgets): rpd tpd rpmo tpmo, KEYS 16-19."""
    return [period(key_base_, name, day, month) for name in ("rpd", "tpd", "rpmo", "tpmo")]


def window_keys(base: str) -> list[str]:
    """A sliding window's keys: the request log, and the token log, its amounts and its sum."""
    return [f"{base}:rpm", f"{base}:tpm", f"{base}:tpm:t", f"{base}:tpm:s"]


@functools.lru_cache(maxsize=256)
def script_keys(org_base_: str, key_base_: str, day: str, month: str) -> tuple[str, ...]:
    """Every key admit.lua and settle.lua touch, in the order they read them from KEYS:
    1 in-flight slots, 2 plan rpm, 3-5 plan tpm (log, amounts, sum), 6 key rpm, 7-9 key tpm,
    10-13 rpd tpd rpmo tpmo, 14 the organization's journal, 15 its due times, 16-19 the key's
    own rpd tpd rpmo tpmo (its budgets, under the key's base). All under the organization's
    tag: one slot (tests/test_redis_cluster_slots.py). Remembered: a key's requests name the
    same 19 keys all day (twice each: admission and settle), and building them took ~4 us."""
    return (
        inflight(org_base_),
        *window_keys(org_base_),
        *window_keys(key_base_),
        *(period(org_base_, name, day, month) for name in ("rpd", "tpd", "rpmo", "tpmo")),
        journal(org_base_),
        journal_due(org_base_),
        *key_periods(key_base_, day, month),
    )


def refused(key_base_: str, minute: int) -> str:
    """Requests of one key refused before admission, in one UTC minute."""
    return f"{key_base_}:refused:{minute}"


def journal(org_base_: str) -> str:
    """Hash: admission member -> the record to write if its process dies (admit.lua). One per
    organization, under its tag, so admit.lua writes it in the slot of the counters it moves."""
    return f"{org_base_}:journal"


def journal_due(org_base_: str) -> str:
    """Sorted set: admission member scored by when its journal entry falls due."""
    return f"{org_base_}:journal:due"


# The journal index names an organization before its first journal entry: a process says so
# again after INDEX_REFRESH_MS (metering.limits.redis_backend), and the reconciler drops an
# organization only once nobody said so for INDEX_FORGET_MS and its journal is empty. The gap
# between the two (50 minutes) is the clock skew between hosts that it tolerates.
INDEX_REFRESH_MS = 10 * 60_000
INDEX_FORGET_MS = 60 * 60_000


def journal_index() -> str:
    """Sorted set: the organizations (their `org_base`) that may have journal entries, scored
    by when a process last said so; the reconciler walks it (metering.recording)."""
    return f"{_spool_tag()}:journal:index"


def journal_size() -> str:
    """How many journal entries the reconciler saw on its last pass (for the fleet page)."""
    return f"{_spool_tag()}:journal:size"


def journal_swept() -> str:
    """Held while a reconciler's SCAN for journals missing from the index is recent."""
    return f"{_spool_tag()}:journal:swept"


def legacy_journal() -> str:
    """The one journal of every organization before it was split per organization (a cluster
    cannot write it in the same script as an organization's counters); the reconciler still
    empties it after an upgrade."""
    return f"{prefix()}:usage:journal"


def legacy_journal_due() -> str:
    return f"{prefix()}:usage:journal:due"


def _spool_tag() -> str:
    return f"{{{prefix()}:usage}}"


def spool() -> str:
    """List of usage records the database could not take, oldest first."""
    return f"{_spool_tag()}:spool"


def spool_claims() -> str:
    """Sorted set: the processing lists of running drains, scored by when they claimed."""
    return f"{_spool_tag()}:spool:claims"


def spool_claim(drain_id: str) -> str:
    """One drain's processing list: the records it took from the spool and is inserting."""
    return f"{_spool_tag()}:spool:claim:{drain_id}"
