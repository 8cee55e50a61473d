"""The dashboard: today's usage against the plan's limits, recent requests, keys at a glance and
the getting-started steps until the first successful API call.

Reads go through metering's selectors (the same numbers as the usage page and `/v1/usage`)
and the in-process routing table for the plan, so the page costs a handful of queries however
much the account has used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from allauth.account.models import EmailAddress
from django.contrib.auth.decorators import login_required
from django.db.models import F
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from accounts.selectors import acting_membership
from apikeys.keyformat import KEY_PREFIX
from apikeys.models import ApiKey
from catalog.routing import routing_table
from metering.models import DailyUsage, UsageRecord
from metering.selectors import usage_limits, usage_overview
from metering.views import QUOTA_LABELS

RECENT_REQUESTS = 10
WARN_PERCENT = 80


@dataclass(frozen=True, slots=True)
class QuotaBar:
    name: str
    label: str
    limit: int
    used: int
    remaining: int
    percent: int
    reset_at: datetime | None

    @property
    def level(self) -> str:
        if self.percent >= 100:
            return "error"
        if self.percent >= WARN_PERCENT:
            return "warn"
        return ""


@dataclass(frozen=True, slots=True)
class KeyBrief:
    name: str
    prefix: str
    active: bool
    playground: bool


def _parse_reset(value) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def quota_bars(limits: dict[str, dict]) -> list[QuotaBar]:
    bars = []
    for name, entry in limits.items():
        limit = entry.get("limit")
        if limit is None:
            continue
        used = int(entry.get("used") or 0)
        percent = 100 if limit <= 0 else min(100, (used * 100) // limit)
        bars.append(
            QuotaBar(
                name=name,
                label=QUOTA_LABELS.get(name, name.replace("_", " ")),
                limit=limit,
                used=used,
                remaining=max(0, limit - used),
                percent=percent,
                reset_at=_parse_reset(entry.get("reset_at")),
            )
        )
    return bars


def _keys_brief(org) -> dict[int, KeyBrief]:
    now = timezone.now()
    rows = ApiKey.objects.for_org(org).values_list(
        "id", "name", "public_id", "revoked_at", "expires_at", "playground"
    )
    return {
        pk: KeyBrief(
            name=name,
            prefix=f"{KEY_PREFIX}{public_id}…",
            active=revoked is None and (expires is None or expires > now),
            playground=playground,
        )
        for pk, name, public_id, revoked, expires, playground in rows
    }


def _first_call_done(org, recent: list[UsageRecord], own_key_ids: set[int]) -> bool:
    """A successful call made with one of the user's own keys (the playground's doesn't count:
    the step is about calling the API from their code). Old records are pruned, so the
    ledgers are asked too."""
    if any(r.outcome == UsageRecord.Outcome.OK and r.key_id in own_key_ids for r in recent):
        return True
    if not own_key_ids:
        return False
    return (
        UsageRecord.objects.filter(
            org_id=org.pk, key_id__in=own_key_ids, outcome=UsageRecord.Outcome.OK
        ).exists()
        or DailyUsage.objects.filter(
            org_id=org.pk, key_id__in=own_key_ids, requests__gt=F("errors")
        ).exists()
    )


@require_safe
@login_required
def dashboard(request):
    user = request.user
    org = acting_membership(request).org
    table = routing_table()
    plan = table.plan_for(org.plan_id)
    overview = usage_overview(org_id=org.pk, days=1)
    limits = (
        usage_limits(plan=plan, org_id=org.pk, today=overview.today, month=overview.month)
        if plan is not None
        else {}
    )
    bars = quota_bars(limits)
    keys = _keys_brief(org)
    recent = list(
        UsageRecord.objects.filter(org_id=org.pk)
        .only(
            "created_at",
            "model",
            "key_id",
            "outcome",
            "http_status",
            "error_code",
            "total_tokens",
            "latency_ms",
            "streamed",
            "end_user",
        )
        .order_by("-created_at", "-id")[:RECENT_REQUESTS]
    )
    own_key_ids = {pk for pk, k in keys.items() if not k.playground}
    first_call = _first_call_done(org, recent, own_key_ids)
    steps = None
    if not first_call:
        verified = EmailAddress.objects.filter(user=user, verified=True).exists()
        steps = {
            "verified": verified,
            "key": bool(own_key_ids),
            "call": False,
        }
    active_keys = [k for k in keys.values() if k.active]
    context = {
        "org": org,
        "plan": plan,
        "today": overview.today,
        "month": overview.month,
        "bars": bars,
        "warnings": [b for b in bars if b.level],
        "recent": [(r, keys.get(r.key_id)) for r in recent],
        "active_key_count": len(active_keys),
        "active_keys": active_keys[:3],
        "steps": steps,
        "example_model": next(iter(sorted(table.models)), "MODEL_ID"),
    }
    return render(request, "dashboard.html", context)
