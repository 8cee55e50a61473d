"""The fleet dashboard on the admin index: what is wrong, first, and where to act on it.

Reads the catalog (pools, routers, their last probe), the status history's last 15 minutes
(ModelHealth), the per-router figures the rollup keeps in the cache, the requests in flight
every worker publishes (one Redis round trip), the usage backlogs and the open incidents. Never
the usage records. Cached for a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Prefetch
from django.utils import timezone

from catalog.models import CatalogModel, Router, RouterPool
from inference.balancer import routers_in_flight
from metering.selectors import UsageBacklogs, usage_backlogs
from ops.models import Incident, ModelHealth
from ops.services import BUCKET, RouterStats, bucket_of, router_stats_cached

CACHE_SECONDS = 5
_CACHE_KEY = "ops:fleet:v1"
WINDOW = timedelta(minutes=15)
# A backlog worth a look: aggregation runs every minute, the spool drains every 30 s.
PENDING_WARN = 50_000


@dataclass(slots=True)
class RouterLine:
    router: Router
    state: str  # healthy, cooling down, unhealthy, draining, disabled
    stats: RouterStats
    in_flight: int = 0

    @property
    def level(self) -> str:
        if self.state == "healthy":
            return "ok"
        return "error" if self.state == "unhealthy" else "warn"


@dataclass(slots=True)
class ModelLine:
    public_id: str
    pk: int
    state: str
    requests: int
    errors: int
    ttfb_p50_ms: int | None

    @property
    def error_share(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(slots=True)
class Fleet:
    pools: list[tuple[RouterPool, list[RouterLine]]]
    models: list[ModelLine]
    backlogs: UsageBacklogs
    incidents: list[Incident]
    generated_at: datetime
    problems: list[str] = field(default_factory=list)
    in_flight_this_process_only: bool = False  # no Redis: this process's own counts


def fleet_dashboard(*, now: datetime | None = None) -> Fleet:
    now = now or timezone.now()
    stats = router_stats_cached()
    in_flight = routers_in_flight()
    pools = []
    problems = []
    for pool in RouterPool.objects.prefetch_related(
        Prefetch("routers", queryset=Router.objects.order_by("id"))
    ):
        lines = [
            RouterLine(r, r.traffic_state, stats.get(r.pk, RouterStats()), in_flight.of(r.pk))
            for r in pool.routers.all()
        ]
        pools.append((pool, lines))
        for line in lines:
            if line.state == "unhealthy":
                problems.append(f"Router {line.router} of pool {pool.name} is unhealthy")
    since = bucket_of(now) - (WINDOW - BUCKET)
    health: dict[str, list[ModelHealth]] = {}
    for row in ModelHealth.objects.filter(bucket__gte=since).order_by("model", "-bucket"):
        health.setdefault(row.model, []).append(row)
    models = []
    for pk, public_id in CatalogModel.objects.filter(enabled=True).values_list("pk", "public_id"):
        rows = health.get(public_id, [])
        requests = sum(r.requests for r in rows)
        weighted = [(r.ttfb_p50_ms, r.requests) for r in rows if r.ttfb_p50_ms is not None]
        ttfb = (
            round(sum(t * n for t, n in weighted) / max(1, sum(n for _, n in weighted)))
            if weighted
            else None
        )
        state = rows[0].state if rows else "unknown"
        models.append(
            ModelLine(
                public_id=public_id,
                pk=pk,
                state=state,
                requests=requests,
                errors=sum(r.upstream_errors + r.timeouts for r in rows),
                ttfb_p50_ms=ttfb,
            )
        )
        if state in ("down", "degraded", "unknown"):
            problems.append(f"Model {public_id} is {state}")
    backlogs = usage_backlogs()
    if backlogs.pending_aggregation >= PENDING_WARN:
        problems.append(f"{backlogs.pending_aggregation:,} records wait for aggregation")
    if backlogs.spooled or backlogs.spool_files:
        problems.append("Usage records are spooled: the database refused them")
    incidents = list(Incident.objects.filter(resolved_at__isnull=True).order_by("-started_at"))
    return Fleet(pools, models, backlogs, incidents, now, problems, in_flight.this_process_only)


def fleet_dashboard_cached() -> Fleet:
    fleet = cache.get(_CACHE_KEY)
    if fleet is None:
        fleet = fleet_dashboard()
        cache.set(_CACHE_KEY, fleet, CACHE_SECONDS)
    return fleet


def fleet_cache_clear() -> None:
    """After a staff action on a router: the dashboard shows it on the next page, not in 5 s."""
    cache.delete(_CACHE_KEY)
