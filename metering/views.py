"""Portal pages for usage: the current organization's charts, quotas and CSV export of its
ledgers. Every member of an organization sees its usage."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.models import Plan
from accounts.selectors import acting_membership
from core.db import read_replica
from metering.selectors import (
    CHART_DAYS,
    daily_usage_csv_lines,
    daily_usage_for_org,
    usage_limits,
    usage_overview,
)

QUOTA_LABELS = {
    "requests_per_minute": "Requests per minute",
    "tokens_per_minute": "Tokens per minute",
    "requests_per_day": "Requests today",
    "tokens_per_day": "Tokens today",
    "requests_per_month": "Requests this month",
    "tokens_per_month": "Tokens this month",
    "max_concurrent_requests": "Requests in flight",
}


@require_GET
@login_required
@read_replica()
def usage_page(request):
    org = acting_membership(request).org
    overview = usage_overview(org_id=org.pk)
    plan = org.plan or Plan.objects.default()
    limits = usage_limits(plan=plan, org_id=org.pk, today=overview.today, month=overview.month)
    quota_cards = [
        (name, QUOTA_LABELS.get(name, name), entry)
        for name, entry in limits.items()
        if entry.get("limit") is not None
    ]
    return render(
        request,
        "metering/usage.html",
        {
            "overview": overview,
            "days_rows": list(zip(overview.days, overview.per_day, strict=True))[::-1],
            "chart_data": overview.chart_data(),
            "quotas": quota_cards,
            "plan": plan,
            "org": org,
            "by_key": _totals(overview.by_key),
            "by_member": _totals(overview.by_member),
            "chart_days": CHART_DAYS,
        },
    )


def _totals(groups: dict[str, dict[str, list[int]]]) -> list[tuple[str, int, int]]:
    """(name, requests, tokens) over the chart's days, most tokens first."""
    rows = [(name, sum(v["requests"]), sum(v["tokens"])) for name, v in groups.items()]
    return sorted(rows, key=lambda row: (-row[2], -row[1], row[0]))


@require_GET
@login_required
@read_replica()
def usage_export_csv(request):
    # Only the current organization's ledger rows; streamed, as a long-lived one has many (the
    # queryset is bound to the replica here: it is read after the view returns).
    org = acting_membership(request).org
    lines = daily_usage_csv_lines(queryset=daily_usage_for_org(org_id=org.pk))
    stamp = timezone.now().strftime("%Y%m%d")
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
    return response
