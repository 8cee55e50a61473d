"""Usage writes: fold UsageRecords into DailyUsage ledgers, prune old records, and rebuild the
limit counters in Redis from the records after Redis lost its data.

Aggregation is claim-and-fold in one transaction per batch. A record is folded exactly once
because the statement that adds it to a ledger is the one that deletes its UsagePending row
(added by a trigger when the record was inserted); on PostgreSQL the claim takes row locks
with SKIP LOCKED, so concurrent runs take disjoint rows, and a record committed late (ids
commit out of order) is simply picked up by a later run.

Ledger semantics: every authenticated request has a record, and every record counts as a
request in its day's ledger; `errors` counts the records whose outcome is not "ok" (so a
request rejected by a limit counts in both `requests` and `errors`, with its tokens, usually
zero). The day is the UTC date of `created_at`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import OperationalError, connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from core.redis import get_redis, run_scripts
from metering.limits import keys
from metering.limits.base import WINDOW_MS, Periods, key_base, org_base
from metering.models import UsagePending, UsageRecord
from metering.partitions import usage_partitions, usage_partitions_drop

log = logging.getLogger(__name__)

AGGREGATE_BATCH = 200_000
PRUNE_BATCH = 10_000
_DEADLOCK_RETRIES = 3

_LEDGER_COLUMNS = (
    "day, org_id, user_id, key_id, model, requests, errors, prompt_tokens, completion_tokens, "
    "total_tokens, estimated, updated_at"
)
_ON_CONFLICT = """
    ON CONFLICT (day, user_id, key_id, model) DO UPDATE SET
        requests = metering_dailyusage.requests + EXCLUDED.requests,
        errors = metering_dailyusage.errors + EXCLUDED.errors,
        prompt_tokens = metering_dailyusage.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = metering_dailyusage.completion_tokens + EXCLUDED.completion_tokens,
        total_tokens = metering_dailyusage.total_tokens + EXCLUDED.total_tokens,
        estimated = metering_dailyusage.estimated + EXCLUDED.estimated,
        updated_at = EXCLUDED.updated_at
"""

# One statement: claim a batch (row locks, skipping rows another run holds), flag it, and add
# it to the ledgers. ORDER BY on the insert makes concurrent runs lock ledger rows in the same
# order, which keeps them from deadlocking on each other.
_PG_FOLD = f"""
WITH claimed AS (
    DELETE FROM metering_usagepending
    WHERE record_id IN (
        SELECT record_id FROM metering_usagepending
        ORDER BY record_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING record_id
), batch AS (
    SELECT r.created_at, r.org_id, r.user_id, r.key_id, r.model, r.outcome,
           r.prompt_tokens, r.completion_tokens, r.total_tokens, r.estimated
    FROM metering_usagerecord r JOIN claimed c ON r.id = c.record_id
    -- The claimed ids' range, known once the claim ran: each month partition reads that range
    -- of its primary key (id, created_at) instead of the planner hashing every partition
    -- whole (10,000,000 records: minutes per batch without it).
    WHERE r.id BETWEEN (SELECT min(record_id) FROM claimed) AND (SELECT max(record_id) FROM claimed)
), folded AS (
    INSERT INTO metering_dailyusage ({_LEDGER_COLUMNS})
    SELECT (created_at AT TIME ZONE 'UTC')::date, org_id, user_id, key_id, model,
           count(*), count(*) FILTER (WHERE outcome <> 'ok'),
           sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),
           count(*) FILTER (WHERE estimated), %(now)s
    FROM batch
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 3, 4, 5
    {_ON_CONFLICT}
    RETURNING 1
)
SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM folded)
"""  # noqa: S608 - built from constants; values are parameters

# SQLite has a single writer and Django opens its transactions IMMEDIATE (settings), so the
# three statements below see and change the same rows with no other writer in between.
_SQLITE_BOUND = """
SELECT max(record_id), count(*) FROM (
    SELECT record_id FROM metering_usagepending ORDER BY record_id LIMIT %s
)
"""
# `WHERE true` is needed: without it SQLite parses ON CONFLICT as a join constraint.
_SQLITE_FOLD = f"""
INSERT INTO metering_dailyusage ({_LEDGER_COLUMNS})
SELECT date(created_at), org_id, user_id, key_id, model,
       count(*), sum(outcome <> 'ok'),
       sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), sum(estimated), %s
FROM metering_usagerecord
WHERE id IN (SELECT record_id FROM metering_usagepending WHERE record_id <= %s) AND true
GROUP BY 1, 2, 3, 4, 5
{_ON_CONFLICT}
"""  # noqa: S608 - built from constants; values are parameters
_SQLITE_FLAG = "DELETE FROM metering_usagepending WHERE record_id <= %s"


def _fold_batch_postgresql(limit: int) -> int:
    for attempt in range(_DEADLOCK_RETRIES):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # Room to sort a 200k-row batch in memory instead of spilling it to disk.
                cursor.execute("SET LOCAL work_mem = '64MB'")
                cursor.execute(_PG_FOLD, {"limit": limit, "now": timezone.now()})
                claimed, _ledgers = cursor.fetchone()
                return claimed
        except OperationalError as exc:
            # A deadlock rolls the whole batch back (records stay unflagged): retry it.
            if "deadlock" not in str(exc).lower() or attempt == _DEADLOCK_RETRIES - 1:
                raise
            log.warning("usage_aggregate: deadlock, retrying the batch")
    return 0


def _fold_batch_sqlite(limit: int) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SQLITE_BOUND, [limit])
        upper, claimed = cursor.fetchone()
        if not claimed:
            return 0
        cursor.execute(_SQLITE_FOLD, [timezone.now(), upper])
        cursor.execute(_SQLITE_FLAG, [upper])
        if cursor.rowcount != claimed:  # cannot happen with one writer; fail loudly if it does
            raise RuntimeError(
                f"usage_aggregate: cleared {cursor.rowcount} of {claimed} pending records"
            )
        return claimed


def usage_aggregate(*, batch_size: int = AGGREGATE_BATCH, max_seconds: float | None = None) -> int:
    """Fold every not-yet-aggregated UsageRecord into DailyUsage; returns how many it folded.

    Each batch commits on its own, so a run stopped midway (time limit, crash) leaves every
    record either folded and flagged or untouched. Safe to run twice, or twice at once.
    """
    fold = _fold_batch_postgresql if connection.vendor == "postgresql" else _fold_batch_sqlite
    deadline = time.monotonic() + max_seconds if max_seconds else None
    total = 0
    while True:
        folded = fold(batch_size)
        total += folded
        if folded < batch_size:
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.info("usage_aggregate: time budget spent, the next run continues")
            break
    if total:
        log.info("usage_aggregate: folded %d records", total)
    return total


def usage_prune(*, older_than_days: int, batch_size: int = PRUNE_BATCH) -> int:
    """Remove records older than the cut-off; ledgers are kept. Returns how many went.

    On a partitioned table (PostgreSQL) a month goes whole, by dropping its partition, once
    all of it is older than the cut-off: records are kept for the retention rounded up to the
    month's end, so between `older_than_days` and a month more. The count of a dropped month is
    the planner's estimate. What lies outside the month partitions (the default partition; the
    whole table on SQLite) is deleted at the cut-off in bounded batches.

    Only records already folded into a ledger are removed, so pruning never loses usage even
    if aggregation has fallen behind (a month with a pending record is kept whole).
    """
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    dropped = usage_partitions_drop(before=cutoff)
    months = usage_partitions()
    # Rows older than the oldest month partition left can only be in the default partition.
    delete_before = min(cutoff, months[0].start) if months else cutoff
    old = (
        UsageRecord.objects.filter(created_at__lt=delete_before)
        .exclude(pk__in=UsagePending.objects.values("record_id"))
        .order_by("id")
    )
    total = 0
    while True:
        # Short transactions: a DELETE of a few thousand rows by primary key, then the next.
        with transaction.atomic():
            deleted, _ = UsageRecord.objects.filter(pk__in=old.values("pk")[:batch_size]).delete()
        total += deleted
        if deleted < batch_size:
            break
    if total or dropped:
        log.info(
            "usage_prune: deleted %d records and dropped %d month partitions older than %d days",
            total,
            len(dropped),
            older_than_days,
        )
    return total + sum(partition.rows for partition in dropped)


# --- rebuilding the limit counters ---------------------------------------------------------

# Raise a counter to at least the value given (or set it with force), and set its expiry.
SET_AT_LEAST = """
local cur = tonumber(redis.call('GET', KEYS[1])) or 0
local v = tonumber(ARGV[1])
if ARGV[3] == '1' or v > cur then redis.call('SET', KEYS[1], v) end
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# Put one finished request back into a per-minute window, once (keyed by its request id).
# KEYS: the window's request log, token log, token amounts, token sum (keys.window_keys).
ADD_TO_WINDOW = """
local m, at, tokens, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if not redis.call('ZSCORE', KEYS[1], m) then
  redis.call('ZADD', KEYS[1], at, m)
end
if not redis.call('ZSCORE', KEYS[2], m) then
  redis.call('ZADD', KEYS[2], at, m)
  redis.call('HSET', KEYS[3], m, tokens)
  redis.call('INCRBY', KEYS[4], tokens)
end
for _, k in ipairs(KEYS) do
  redis.call('PEXPIRE', k, ttl)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class LimitsRebuilt:
    day: str
    month: str
    orgs: int
    requests_in_window: int


def limits_rebuild(*, force: bool = False) -> LimitsRebuilt | None:
    """Rebuild the limit counters in Redis from the usage records; None without Redis.

    UsageRecord is the source of truth. Today's and this month's admitted requests and their
    tokens per organization and per key (a request refused by a limit or for bad input was
    never counted) become the day and month counters; the last minute's records refill the
    per-minute windows of organizations and keys. Safe to run any number of times: a counter
    is only raised to the database's count, never lowered (it may hold requests admitted
    since Redis came back that have no record yet), unless `force` (the command's --force).
    """
    client = get_redis()
    if client is None:
        return None
    now = timezone.now()
    periods = Periods.at(int(now.timestamp() * 1000))
    day_start = periods.day_end - timedelta(days=1)
    month_start = day_start.replace(day=1)
    counted = UsageRecord.objects.filter(admitted=True)

    set_at_least = client.register_script(SET_AT_LEAST)
    add_to_window = client.register_script(ADD_TO_WINDOW)
    calls: list[tuple] = []
    orgs = set()
    for since, span, expire_at in (
        (day_start, "d", periods.day_expire_at),
        (month_start, "m", periods.month_expire_at),
    ):
        rows = (
            counted.filter(created_at__gte=since)
            .order_by()
            .filter(org_id__isnull=False)
            .values("org_id")
            .annotate(n=Count("id"), tokens=Sum("total_tokens"))
        )
        for row in rows:
            base = org_base(row["org_id"])
            orgs.add(row["org_id"])
            names = ("rpd", "tpd") if span == "d" else ("rpmo", "tpmo")
            for name, value in zip(names, (row["n"], row["tokens"] or 0), strict=True):
                calls.append(
                    (
                        set_at_least,
                        [keys.period(base, name, periods.day, periods.month)],
                        [value, expire_at, "1" if force else "0"],
                    )
                )
        # Each key's own counters too (what its budgets are checked against).
        key_rows = (
            counted.filter(created_at__gte=since)
            .order_by()
            .filter(org_id__isnull=False)
            .values("org_id", "key_id")
            .annotate(n=Count("id"), tokens=Sum("total_tokens"))
        )
        for row in key_rows:
            base = key_base(row["org_id"], row["key_id"])
            names = ("rpd", "tpd") if span == "d" else ("rpmo", "tpmo")
            for name, value in zip(names, (row["n"], row["tokens"] or 0), strict=True):
                calls.append(
                    (
                        set_at_least,
                        [keys.period(base, name, periods.day, periods.month)],
                        [value, expire_at, "1" if force else "0"],
                    )
                )

    window_start = now - timedelta(milliseconds=WINDOW_MS)
    recent = (
        counted.filter(created_at__gt=window_start, org_id__isnull=False)
        .order_by()
        .values_list("request_id", "org_id", "key_id", "total_tokens", "created_at")
    )
    in_window = 0
    for request_id, org_id, key_id, tokens, created_at in recent.iterator():
        at = int(created_at.timestamp() * 1000)
        member = f"{request_id}:rebuilt"
        for base in (org_base(org_id), key_base(org_id, key_id)):
            calls.append(
                (add_to_window, keys.window_keys(base), [member, at, tokens, WINDOW_MS + 1000])
            )
        in_window += 1
    # one pipeline (per node on a cluster); every call is idempotent, so a failure raises and
    # the command runs again
    failed = next((r for r in run_scripts(client, calls) if isinstance(r, Exception)), None)
    if failed is not None:
        raise failed
    return LimitsRebuilt(
        day=str(periods.day),
        month=str(periods.month),
        orgs=len(orgs),
        requests_in_window=in_window,
    )
