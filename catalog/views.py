"""The public model catalog page: what runs now, and what the visitor's plan allows."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_safe

from accounts.models import Plan
from accounts.selectors import current_membership
from catalog.routing import routing_table
from catalog.selectors import catalog_enabled_models

LIMIT_LABELS = {
    "requests_per_minute": "Requests per minute",
    "tokens_per_minute": "Tokens per minute",
    "requests_per_day": "Requests per day (UTC)",
    "tokens_per_day": "Tokens per day (UTC)",
    "requests_per_month": "Requests per month",
    "tokens_per_month": "Tokens per month",
    "max_concurrent_requests": "Requests in flight at once",
}


@require_safe
def models_page(request):
    models = catalog_enabled_models()
    plan = None
    allowed: set[str] = set()
    limits: list[tuple[str, int | None]] = []
    if request.user.is_authenticated:
        table = routing_table()
        membership = current_membership(request)
        plan = table.plan_for(membership.org.plan_id if membership else None)
        if plan is not None:
            allowed = {m.public_id for m in models if table.model_allowed(m, plan, None)}
            limits = [
                (LIMIT_LABELS.get(name, name), getattr(plan, name)) for name in Plan.LIMIT_FIELDS
            ]
    rows = [(m, m.public_id in allowed) for m in models]
    return render(request, "catalog/models.html", {"rows": rows, "plan": plan, "limits": limits})
