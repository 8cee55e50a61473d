"""What the status page shows, read from the compact history only (never usage records)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.core.cache import cache
from django.db.models import Prefetch, Q
from django.utils import timezone

from catalog.models import CatalogModel
from ops.models import Incident, IncidentUpdate, ModelDay, ModelHealth

log = logging.getLogger(__name__)

STATUS_DAYS = 90
RECENT_INCIDENT_DAYS = 14
# A model whose newest history row is older than this has no known state (beat is not running).
STALE_AFTER = timedelta(minutes=10)
CACHE_SECONDS = 15
_CACHE_KEY = "ops:status:v1"
_OPEN_CACHE_KEY = "ops:open-incidents:v1"


@dataclass(slots=True)
class DayBar:
    day: date
    availability: float | None  # None: no history that day
    level: str  # "ok", "minor" (some degraded or <99.9% up), "major" (<99% up), "none"
    label: str = ""  # "2026-11-27: 99.93%", made once here: 90 bars a model add up in a template

    def __post_init__(self) -> None:
        percent = "no data" if self.availability is None else f"{self.availability * 100:.2f}%"
        self.label = f"{self.day.isoformat()}: {percent}"


@dataclass(slots=True)
class ModelStatus:
    id: str
    name: str
    state: str  # operational, degraded, down, or unknown (no recent history)
    checked_at: datetime | None
    days: list[DayBar] = field(default_factory=list)

    @property
    def uptime(self) -> str:
        known = [d for d in self.days if d.availability is not None]
        if not known:
            return "no data"
        return f"{sum(d.availability for d in known) / len(known) * 100:.2f}%"


@dataclass(slots=True)
class StatusOverview:
    models: list[ModelStatus]
    incidents: list[Incident]
    generated_at: datetime

    @property
    def overall(self) -> str:
        states = {m.state for m in self.models}
        for state in ("down", "degraded"):
            if state in states:
                return state
        return "operational" if states <= {"operational"} and states else "unknown"


def _level(day: ModelDay | None) -> str:
    if day is None or not day.buckets:
        return "none"
    availability = day.availability or 0.0
    if availability < 0.99:
        return "major"
    if availability < 0.999 or day.degraded:
        return "minor"
    return "ok"


def status_overview(*, now: datetime | None = None) -> StatusOverview:
    """Every enabled model's state, its 90 days, and the open and recent incidents."""
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=STATUS_DAYS - 1)
    models = list(
        CatalogModel.objects.filter(enabled=True)
        .order_by("sort_order", "public_id")
        .values_list("public_id", "display_name")
    )
    ids = [m[0] for m in models]
    latest: dict[str, ModelHealth] = {}
    for row in ModelHealth.objects.filter(model__in=ids, bucket__gte=now - STALE_AFTER).order_by(
        "model", "-bucket"
    ):
        latest.setdefault(row.model, row)
    days: dict[tuple[str, date], ModelDay] = {
        (d.model, d.day): d for d in ModelDay.objects.filter(model__in=ids, day__gte=first)
    }
    result = []
    for public_id, display_name in models:
        health = latest.get(public_id)
        fresh = health is not None and health.updated_at >= now - STALE_AFTER
        bars = []
        for offset in range(STATUS_DAYS):
            day = first + timedelta(days=offset)
            row = days.get((public_id, day))
            bars.append(DayBar(day, row.availability if row else None, _level(row)))
        result.append(
            ModelStatus(
                id=public_id,
                name=display_name or public_id,
                state=health.state if fresh and health else "unknown",
                checked_at=health.updated_at if health else None,
                days=bars,
            )
        )
    return StatusOverview(models=result, incidents=incidents_shown(now=now), generated_at=now)


def incidents_shown(*, now: datetime) -> list[Incident]:
    """Open incidents, and those resolved in the last two weeks, newest first."""
    since = now - timedelta(days=RECENT_INCIDENT_DAYS)
    return list(
        Incident.objects.filter(Q(resolved_at__isnull=True) | Q(resolved_at__gte=since))
        .order_by("-started_at")
        .prefetch_related(
            Prefetch("updates", queryset=IncidentUpdate.objects.order_by("-created_at")),
            Prefetch(
                "affected_models",
                queryset=CatalogModel.objects.order_by("public_id").only(
                    "public_id", "display_name"
                ),
            ),
        )[:20]
    )


def status_overview_cached() -> StatusOverview:
    """The overview, computed at most every CACHE_SECONDS per cache (the page and the JSON)."""
    overview = cache.get(_CACHE_KEY)
    if overview is None:
        overview = status_overview()
        cache.set(_CACHE_KEY, overview, CACHE_SECONDS)
    return overview


def open_incidents_cached() -> list[dict]:
    """Open incidents as {title, status, started_at}, for the banner on every page: from the
    cache only, so that no page pays a query for it. Written when staff change an incident
    and refreshed by the status rollup every minute (after a cache flush, within a minute).
    With the shared cache down, no banner: the pages keep working."""
    try:
        return cache.get(_OPEN_CACHE_KEY) or []
    except Exception as exc:
        log.warning("open incidents: cache unavailable (%s)", exc.__class__.__name__)
        return []


def open_incidents_refresh() -> list[dict]:
    found = [
        {"title": i.title, "status": i.get_status_display(), "started_at": i.started_at}
        for i in Incident.objects.filter(resolved_at__isnull=True).order_by("-started_at")[:3]
    ]
    cache.set(_OPEN_CACHE_KEY, found, None)
    return found


def status_cache_clear() -> None:
    """After staff change an incident: the pages show it at once, not in 15 s."""
    cache.delete(_CACHE_KEY)
    open_incidents_refresh()
