"""Status history: roll the router probes and the last minutes of usage records into one
ModelHealth row per model per 5 minutes (beat, every minute), keep ModelDay current, prune.

Reads usage records by `created_at` (indexed) over the last ten minutes only, once a minute in
Celery: the /v1/ request path is untouched. Safe to run twice or at once: every row it writes
is recomputed from scratch and upserted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from catalog.models import CatalogModel, Router
from metering.models import UsageRecord
from ops.models import Incident, ModelDay, ModelHealth, State
from ops.selectors import open_incidents_refresh, status_cache_clear

log = logging.getLogger(__name__)

BUCKET = timedelta(minutes=5)
# The state looks at the last 5 minutes of outcomes; below this many requests their share says
# nothing (one failed call of two is not an outage).
MIN_REQUESTS = 5
DEGRADED_ERROR_SHARE = 0.05
DOWN_ERROR_SHARE = 0.5
SLOW_TTFB_MS = 10_000
HISTORY_DAYS = 90

# The outcomes that reached (or tried to reach) a router: what health is measured on.
_ROUTED = ("ok", "upstream_error", "timeout", "cancelled")


def bucket_of(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(minute=at.minute - at.minute % 5, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Outcomes:
    requests: int = 0
    upstream_errors: int = 0
    timeouts: int = 0
    ttfb_p50_ms: int | None = None


def model_state(*, routers: int, routers_up: int, outcomes: Outcomes) -> str:
    """A model's state from its pool's probes and its recent real outcomes.

    Down: no router of its pool can take traffic (all unhealthy, or none enabled), or most of
    its recent requests failed upstream. Degraded: some router is unhealthy, or more than 5% of
    its recent requests failed upstream or timed out, or the median time to first byte is over
    10 s. Operational otherwise.
    """
    failed = outcomes.upstream_errors + outcomes.timeouts
    share = failed / outcomes.requests if outcomes.requests >= MIN_REQUESTS else 0.0
    if routers_up == 0 or share >= DOWN_ERROR_SHARE:
        return State.DOWN
    if routers_up < routers or share >= DEGRADED_ERROR_SHARE:
        return State.DEGRADED
    if outcomes.ttfb_p50_ms is not None and outcomes.ttfb_p50_ms > SLOW_TTFB_MS:
        return State.DEGRADED
    return State.OPERATIONAL


def _median(values: list[int]) -> int | None:
    if not values:
        return None
    values.sort()
    return values[(len(values) - 1) // 2]


_PG_OUTCOMES = """
SELECT model, count(*),
       count(*) FILTER (WHERE outcome = 'upstream_error'),
       count(*) FILTER (WHERE outcome = 'timeout'),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY ttfb_ms)
FROM metering_usagerecord
WHERE created_at >= %s AND created_at < %s AND model <> ''
  AND outcome IN ('ok', 'upstream_error', 'timeout', 'cancelled')
GROUP BY model
"""


def outcomes_between(start: datetime, end: datetime) -> dict[str, Outcomes]:
    """Per model, the routed requests created in [start, end), their failures and p50 TTFB."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_PG_OUTCOMES, [start, end])
            return {
                model: Outcomes(n, errors, timeouts, int(p50) if p50 is not None else None)
                for model, n, errors, timeouts, p50 in cursor.fetchall()
            }
    counts = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end, outcome__in=_ROUTED)
        .exclude(model="")
        .order_by()
        .values("model")
        .annotate(
            n=Count("id"),
            errors=Count("id", filter=Q(outcome="upstream_error")),
            timeouts=Count("id", filter=Q(outcome="timeout")),
        )
    )
    ttfbs: dict[str, list[int]] = defaultdict(list)
    for model, ttfb in (
        UsageRecord.objects.filter(
            created_at__gte=start, created_at__lt=end, outcome__in=_ROUTED, ttfb_ms__isnull=False
        )
        .order_by()
        .values_list("model", "ttfb_ms")
    ):
        ttfbs[model].append(ttfb)
    return {
        row["model"]: Outcomes(
            row["n"], row["errors"], row["timeouts"], _median(ttfbs[row["model"]])
        )
        for row in counts
    }


ROUTER_STATS_KEY = "ops:router-stats:v1"

_PG_ROUTERS = """
SELECT router_id, count(*),
       count(*) FILTER (WHERE outcome IN ('upstream_error', 'timeout')),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome = 'ok'),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY ttfb_ms) FILTER (WHERE outcome = 'ok')
FROM metering_usagerecord
WHERE created_at >= %s AND created_at < %s AND router_id IS NOT NULL
  AND outcome IN ('ok', 'upstream_error', 'timeout', 'cancelled')
GROUP BY router_id
"""


@dataclass(frozen=True, slots=True)
class RouterStats:
    requests: int = 0
    errors: int = 0
    latency_p50_ms: int | None = None
    ttfb_p50_ms: int | None = None


def router_stats_between(start: datetime, end: datetime) -> dict[int, RouterStats]:
    """Per router (across every worker: from the records), routed requests in [start, end),
    how many failed upstream or timed out, and the median latency and TTFB of the good ones."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_PG_ROUTERS, [start, end])
            return {row[0]: RouterStats(*row[1:]) for row in cursor.fetchall()}
    found: dict[int, list] = {}
    for router_id, outcome, latency, ttfb in (
        UsageRecord.objects.filter(
            created_at__gte=start,
            created_at__lt=end,
            router_id__isnull=False,
            outcome__in=_ROUTED,
        )
        .order_by()
        .values_list("router_id", "outcome", "latency_ms", "ttfb_ms")
    ):
        entry = found.setdefault(router_id, [0, 0, [], []])
        entry[0] += 1
        entry[1] += outcome in ("upstream_error", "timeout")
        if outcome == "ok":
            entry[2].append(latency)
            if ttfb is not None:
                entry[3].append(ttfb)
    return {
        rid: RouterStats(n, errors, _median(latencies), _median(ttfbs))
        for rid, (n, errors, latencies, ttfbs) in found.items()
    }


def router_stats_cached() -> dict[int, RouterStats]:
    """The last 5 minutes per router, as the last rollup counted them (a minute old at most)."""
    return cache.get(ROUTER_STATS_KEY) or {}


def _pool_routers() -> dict[int, tuple[int, int]]:
    """Per pool: (routers that take traffic, of those not unhealthy)."""
    pools: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for pool_id, health in Router.objects.filter(enabled=True, draining=False).values_list(
        "pool_id", "health"
    ):
        pools[pool_id][0] += 1
        pools[pool_id][1] += health != Router.Health.UNHEALTHY
    return {pool: (total, up) for pool, (total, up) in pools.items()}


def health_rollup(*, now: datetime | None = None) -> int:
    """Write the current and the previous bucket of every enabled model; returns rows written.

    The current bucket's state is computed from the probes now and the last 5 minutes of
    outcomes; its counts are those of the bucket so far. The previous bucket's counts are
    recounted once more (records are written a moment after their request ends), its state kept.
    """
    now = now or timezone.now()
    open_incidents_refresh()  # the banner's cache: back within a minute after a flush
    current = bucket_of(now)
    previous = current - BUCKET
    models = list(CatalogModel.objects.filter(enabled=True).values_list("public_id", "pool_id"))
    if not models:
        return 0
    pools = _pool_routers()
    recent = outcomes_between(now - BUCKET, now + timedelta(seconds=1))
    in_current = outcomes_between(current, current + BUCKET)
    in_previous = outcomes_between(previous, current)
    cache.set(ROUTER_STATS_KEY, router_stats_between(now - BUCKET, now), 180)
    rows = []
    for public_id, pool_id in models:
        routers, up = pools.get(pool_id, (0, 0))
        state = model_state(
            routers=routers, routers_up=up, outcomes=recent.get(public_id, Outcomes())
        )
        o = in_current.get(public_id, Outcomes())
        rows.append(
            ModelHealth(
                model=public_id,
                bucket=current,
                state=state,
                requests=o.requests,
                upstream_errors=o.upstream_errors,
                timeouts=o.timeouts,
                ttfb_p50_ms=o.ttfb_p50_ms,
                routers=routers,
                routers_up=up,
                updated_at=now,
            )
        )
    with transaction.atomic():
        ModelHealth.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["model", "bucket"],
            update_fields=[
                "state",
                "requests",
                "upstream_errors",
                "timeouts",
                "ttfb_p50_ms",
                "routers",
                "routers_up",
                "updated_at",
            ],
        )
        for public_id, o in in_previous.items():
            ModelHealth.objects.filter(model=public_id, bucket=previous).update(
                requests=o.requests,
                upstream_errors=o.upstream_errors,
                timeouts=o.timeouts,
                ttfb_p50_ms=o.ttfb_p50_ms,
            )
        days = {current.date(), previous.date()}
        for day in sorted(days):
            model_days_rebuild(day=day)
    return len(rows)


def model_days_rebuild(*, day: date) -> int:
    """Recount the day's buckets per model from ModelHealth (at most 288 rows a model)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    counts = (
        ModelHealth.objects.filter(bucket__gte=start, bucket__lt=start + timedelta(days=1))
        .order_by()
        .values("model")
        .annotate(
            n=Count("id"),
            degraded=Count("id", filter=Q(state=State.DEGRADED)),
            down=Count("id", filter=Q(state=State.DOWN)),
        )
    )
    rows = [
        ModelDay(model=c["model"], day=day, buckets=c["n"], degraded=c["degraded"], down=c["down"])
        for c in counts
    ]
    ModelDay.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["model", "day"],
        update_fields=["buckets", "degraded", "down"],
    )
    return len(rows)


def health_prune(*, older_than_days: int = HISTORY_DAYS) -> int:
    """Drop history older than the status page shows (the 90-day bar)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = ModelHealth.objects.filter(bucket__lt=cutoff).delete()
    days, _ = ModelDay.objects.filter(day__lt=cutoff.date()).delete()
    if deleted or days:
        log.info("health_prune: deleted %d buckets and %d days", deleted, days)
    return deleted + days


def incident_sync(*, incident) -> None:
    """Take the incident's status from its newest update; resolved stamps `resolved_at`."""
    newest = incident.updates.order_by("-created_at", "-id").first()
    if newest is not None:
        incident.status = newest.status
    resolved = incident.status == Incident.Status.RESOLVED
    if resolved and incident.resolved_at is None:
        incident.resolved_at = newest.created_at if newest else timezone.now()
    elif not resolved:
        incident.resolved_at = None
    incident.save(update_fields=["status", "resolved_at"])
    transaction.on_commit(status_cache_clear)
