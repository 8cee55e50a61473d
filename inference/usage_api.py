"""`GET /v1/usage`: the calling key's and its organization's usage, and the limits (the plan's
apply to the organization as a whole), like OpenRouter's `GET /api/v1/key`."""

from __future__ import annotations

from rest_framework.response import Response

from accounts.models import Organization, Plan
from apikeys.models import ApiKey
from catalog.routing import routing_table
from inference.views import V1View
from metering.selectors import key_budget_usage, usage_for_key, usage_limits


class UsageApi(V1View):
    def get(self, request):
        principal = request.user
        usage = usage_for_key(org_id=principal.org_id, key_id=principal.key_id)
        plan = routing_table().plan_for(principal.plan_id)
        name = (
            ApiKey.objects.filter(pk=principal.key_id, org_id=principal.org_id)
            .values_list("name", flat=True)
            .first()
        )
        org = Organization.objects.filter(pk=principal.org_id).values("slug", "name").first()
        return Response(
            {
                "object": "usage",
                "key": {
                    "id": principal.public_id,
                    "name": name,
                    "today": usage.key_today.brief(),
                    "month": usage.key_month.brief(),
                    # The key's own day and month budgets against its own counters (limit
                    # null: no key budget); `limits` below shows whichever binds.
                    "budgets": {
                        name: budget.as_dict()
                        for name, budget in key_budget_usage(key=principal).items()
                    },
                },
                "organization": {
                    "id": org["slug"] if org else None,
                    "name": org["name"] if org else None,
                    "today": usage.org_today.brief(),
                    "month": usage.org_month.brief(),
                },
                # Before organizations this was the key owner's totals; it is the
                # organization's now (for a personal organization, the same numbers).
                "user": {"today": usage.org_today.brief(), "month": usage.org_month.brief()},
                "plan": _plan_body(plan, principal),
                "limits": usage_limits(
                    principal=principal, plan=plan, today=usage.org_today, month=usage.org_month
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
