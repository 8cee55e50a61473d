"""The public status page (/status, /status.json): no login, cached briefly for a CDN too."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from ops.selectors import CACHE_SECONDS, StatusOverview, status_overview_cached
from ops.services import health_rollup


def _public(response):
    # A CDN (s-maxage) and browsers may reuse the page for as long as it is cached here.
    patch_cache_control(response, public=True, max_age=CACHE_SECONDS, s_maxage=CACHE_SECONDS)
    return response


def embedded_catch_up(name: str, task) -> None:
    """`make run` (DEBUG, tasks run in-process, no beat): what beat would run, at most once a
    minute, when a page needs it. Never in production: there beat does it."""
    if (
        settings.DEBUG
        and settings.CELERY_TASK_ALWAYS_EAGER
        and cache.add(f"ops:catch-up:{name}", 1, 60)
    ):
        task()


def _overview() -> StatusOverview:
    embedded_catch_up("status", health_rollup)
    return status_overview_cached()


@require_GET
def status_page(request):
    overview = _overview()
    return _public(render(request, "ops/status.html", {"overview": overview}))


def status_document(overview: StatusOverview) -> dict:
    """The JSON shape: public model ids, states, days and incidents; nothing internal."""
    return {
        "status": overview.overall,
        "generated_at": overview.generated_at.isoformat(),
        "models": [
            {
                "id": m.id,
                "name": m.name,
                "status": m.state,
                "checked_at": m.checked_at.isoformat() if m.checked_at else None,
                "uptime_90d": m.uptime,
                "days": [
                    {
                        "date": d.day.isoformat(),
                        "availability": round(d.availability, 5)
                        if d.availability is not None
                        else None,
                    }
                    for d in m.days
                ],
            }
            for m in overview.models
        ],
        "incidents": [
            {
                "title": i.title,
                "status": i.status,
                "started_at": i.started_at.isoformat(),
                "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
                "models": [m.public_id for m in i.affected_models.all()],
                "updates": [
                    {"status": u.status, "message": u.message, "at": u.created_at.isoformat()}
                    for u in i.updates.all()
                ],
            }
            for i in overview.incidents
        ],
    }


@require_GET
def status_json(request):
    return _public(JsonResponse(status_document(_overview())))
