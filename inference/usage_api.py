"""`GET /v1/usage`: the calling key's usage and limits (like OpenRouter's `GET /api/v1/key`)."""

from __future__ import annotations

from rest_framework.response import Response

from accounts.models import Plan
from apikeys.models import ApiKey
from catalog.routing import routing_table
from inference.views import V1View
from metering.selectors import usage_for_key, usage_limits


class UsageApi(V1View):
    def get(self, request):
        principal = request.user
        usage = usage_for_key(user_id=principal.owner_id, key_id=principal.key_id)
        plan = routing_table().plan_for(principal.plan_id)
        name = (
            ApiKey.objects.filter(pk=principal.key_id, owner_id=principal.owner_id)
            .values_list("name", flat=True)
            .first()
        )
        return Response(
            {
                "object": "usage",
                "key": {
                    "id": principal.public_id,
                    "name": name,
                    "today": usage.key_today.brief(),
                    "month": usage.key_month.brief(),
                },
                "user": {"today": usage.user_today.brief(), "month": usage.user_month.brief()},
                "plan": _plan_body(plan, principal),
                "limits": usage_limits(
                    principal=principal, plan=plan, today=usage.user_today, month=usage.user_month
                ),
            }
        )


def _plan_body(plan, principal) -> dict | None:
    if plan is None:
        return None
    body = {"name": plan.name, **{field: getattr(plan, field) for field in Plan.LIMIT_FIELDS}}
    # A key may narrow the plan's rates: show what actually applies to this key.
    for field in ("requests_per_minute", "tokens_per_minute"):
        own = getattr(principal, field)
        if own is not None:
            body[field] = own if body[field] is None else min(own, body[field])
    return body
