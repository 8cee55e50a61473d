"""Portal pages for usage: the current organization's charts, quotas and CSV export of its
ledgers, and its request log (/requests: every call, filtered, a detail page, CSV). Every
member of an organization sees its usage and its whole log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_ratelimit.decorators import ratelimit

from accounts.models import Plan
from accounts.selectors import acting_membership
from apikeys.models import ApiKey
from catalog.models import CatalogModel
from core.db import read_replica
from metering.models import UsageRecord
from metering.selectors import (
    CHART_DAYS,
    STATUS_CLASSES,
    LogFilters,
    daily_usage_csv_lines,
    daily_usage_for_org,
    key_label,
    request_log_csv_lines,
    request_log_page,
    request_log_record,
    retention_start,
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


@dataclass(frozen=True, slots=True)
class LogRow:
    """A record as the log's table shows it, formatted once here: a page has 50 of them and
    each template lookup costs more than the formatting."""

    request_id: str
    time: str
    key: str
    model: str
    endpoint: str
    streamed: bool
    outcome: str
    error_code: str
    status: int
    tokens: str
    estimated: bool
    latency: str
    ttfb: str


_OUTCOMES = dict(UsageRecord.Outcome.choices)


def _log_row(record: UsageRecord, key: str) -> LogRow:
    return LogRow(
        request_id=record.request_id,
        time=record.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        key=key or "—",
        model=record.model or "—",
        endpoint=record.endpoint,
        streamed=record.streamed,
        outcome=_OUTCOMES.get(record.outcome, record.outcome),
        error_code=record.public_error_code,
        status=record.http_status,
        tokens=(
            f"{record.prompt_tokens:,} / {record.completion_tokens:,} / {record.total_tokens:,}"
        ),
        estimated=record.estimated,
        latency=f"{record.latency_ms:,} ms",
        ttfb="—" if record.ttfb_ms is None else f"{record.ttfb_ms:,} ms",
    )


def _key_labels(org_id: int) -> dict[int, str]:
    return {
        pk: key_label(name, public_id)
        for pk, name, public_id in ApiKey.objects.filter(org_id=org_id)
        .order_by("name", "pk")
        .values_list("pk", "name", "public_id")
    }


@never_cache
@require_GET
@login_required
@read_replica()
def requests_page(request):
    """The organization's calls, newest first: filters, search by request id, keyset pages."""
    org = acting_membership(request).org
    filters, problems = LogFilters.parse(request.GET)
    page = request_log_page(org_id=org.pk, filters=filters, cursor=request.GET.get("after"))
    labels = _key_labels(org.pk)
    query = filters.as_query()
    return render(
        request,
        "metering/requests.html",
        {
            "org": org,
            "records": [_log_row(record, labels.get(record.key_id, "")) for record in page.records],
            "filters": filters,
            "problems": problems,
            "keys": labels,
            "models": list(
                CatalogModel.objects.order_by("public_id").values_list("public_id", flat=True)
            ),
            "outcomes": UsageRecord.Outcome.choices,
            "status_classes": list(STATUS_CLASSES),
            "next_url": (
                f"?{urlencode({**query, 'after': page.next_cursor})}" if page.next_cursor else None
            ),
            "first_url": f"?{urlencode(query)}" if query else "?",
            "paged": bool(request.GET.get("after")),
            "csv_url": f"/requests/export.csv?{urlencode(query)}",
            "retention_days": settings.USAGE_RETENTION_DAYS,
            "retention_start": retention_start(),
        },
    )


@never_cache
@require_GET
@login_required
def request_detail(request, request_id: str):
    # On the primary: a customer opens a request seconds after its error, before a replica
    # may have it (one indexed row: no load worth moving).
    org = acting_membership(request).org
    record = request_log_record(org_id=org.pk, request_id=request_id)
    if record is None:
        raise Http404("No such request in this organization's log")
    labels = _key_labels(org.pk)
    return render(
        request,
        "metering/request.html",
        {"record": record, "key_label": labels.get(record.key_id, ""), "org": org},
    )


@require_GET
@login_required
@ratelimit(key="user", rate="10/m", method="GET", block=True)
@read_replica()
def requests_export_csv(request):
    """Exactly the rows the same filters show on /requests, streamed."""
    org = acting_membership(request).org
    filters, _ = LogFilters.parse(request.GET)
    lines = request_log_csv_lines(org_id=org.pk, filters=filters, key_labels=_key_labels(org.pk))
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="requests-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
