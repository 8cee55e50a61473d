"""Reads of the catalog for pages and health checks, from the in-process routing table."""

from __future__ import annotations

import logging

from catalog.routing import ModelInfo, routing_table

log = logging.getLogger(__name__)


def routing_readiness() -> str:
    """'ok' when every enabled model's pool has at least one healthy, enabled router."""
    try:
        table = routing_table()
    except Exception:
        return "error"
    for model in table.models.values():
        routers = table.routers.get(model.pool_id, [])
        if not any(r.health == "healthy" for r in routers):
            return "error"
    return "ok"


def catalog_enabled_models() -> list[ModelInfo]:
    """The enabled public models, by id, from the in-process routing table.

    Public pages must keep working when the shared cache is down, so a failure to read the
    table shows an empty catalog instead of an error page.
    """
    try:
        models = routing_table().models.values()
    except Exception as exc:  # the landing page degrades, never fails
        log.warning("landing: routing table unavailable: %s", exc.__class__.__name__)
        return []
    return sorted(models, key=lambda model: model.public_id)
