"""Portal pages for usage: the customer's charts, quotas and CSV export of their ledgers."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.models import Plan
from metering.selectors import (
    CHART_DAYS,
    daily_usage_csv_lines,
    daily_usage_for_user,
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
def usage_page(request):
    user = request.user
    overview = usage_overview(user_id=user.pk)
    plan = user.plan or Plan.objects.default()
    limits = usage_limits(plan=plan, owner_id=user.pk, today=overview.today, month=overview.month)
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
            "chart_days": CHART_DAYS,
        },
    )


@require_GET
@login_required
def usage_export_csv(request):
    # Only the caller's own ledger rows; streamed, as a long-lived account has many.
    lines = daily_usage_csv_lines(queryset=daily_usage_for_user(user_id=request.user.pk))
    stamp = timezone.now().strftime("%Y%m%d")
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
    return response
