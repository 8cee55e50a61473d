from __future__ import annotations

from catalog.routing import routing_table


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
