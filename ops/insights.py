"""Staff insights: the small daily aggregates Celery builds from the usage records, and what
the insights page reads from them and from the ledgers (never the raw records at page load).

Sign-ups and the funnel are per user (`CUSTOMER`: the member who created the key); what is
billed (top customers, with their plan) is per organization (`BILLED`), which owns the plan.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.utils import timezone

from accounts.models import Plan
from apikeys.models import ApiKey
from metering.models import DailyUsage, UsageRecord
from ops.models import InsightDay, InsightModelDay

log = logging.getLogger(__name__)

# The columns that name the customer: of the ledgers and records, and of the keys.
CUSTOMER = "user"
KEY_CUSTOMER = "owner"
BILLED = "org"

FUNNEL_WEEKS = 8
SERIES_DAYS = 30
TOP_CUSTOMERS = 10

# metering.limits.base names of the limits, in words.
LIMIT_NAMES = {
    "p_rpm": "requests per minute (plan)",
    "k_rpm": "requests per minute (key)",
    "p_tpm": "tokens per minute (plan)",
    "k_tpm": "tokens per minute (key)",
    "rpd": "requests per day",
    "tpd": "tokens per day",
    "rpmo": "requests per month",
    "tpmo": "tokens per month",
    "conc": "requests in flight",
}


def _day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


_PG_MODEL_DAY = """
SELECT model, count(*),
       count(*) FILTER (WHERE outcome = 'ok'),
       count(*) FILTER (WHERE outcome = 'upstream_error'),
       count(*) FILTER (WHERE outcome = 'timeout'),
       count(*) FILTER (WHERE outcome = 'client_error'),
       count(*) FILTER (WHERE outcome = 'cancelled'),
       count(*) FILTER (WHERE outcome = 'rate_limited'),
       coalesce(sum(total_tokens), 0),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome = 'ok'),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome = 'ok'),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY ttfb_ms) FILTER (WHERE outcome = 'ok'),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY ttfb_ms) FILTER (WHERE outcome = 'ok')
FROM metering_usagerecord
WHERE created_at >= %s AND created_at < %s AND model <> ''
GROUP BY model
"""

_OUTCOME_FIELDS = {
    "ok": "ok",
    "upstream_error": "upstream_errors",
    "timeout": "timeouts",
    "client_error": "client_errors",
    "cancelled": "cancelled",
    "rate_limited": "refused",
}


def _percentile(values: list[int], q: float) -> int | None:
    """The nearest-rank percentile (PostgreSQL's percentile_disc)."""
    if not values:
        return None
    values.sort()
    index = max(0, -(-int(q * len(values) * 1000) // 1000) - 1)
    return values[min(index, len(values) - 1)]


def _model_days(day: date) -> list[InsightModelDay]:
    start, end = _day_range(day)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute(_PG_MODEL_DAY, [start, end])
            return [
                InsightModelDay(
                    day=day,
                    model=m,
                    requests=n,
                    ok=ok,
                    upstream_errors=ue,
                    timeouts=to,
                    client_errors=ce,
                    cancelled=ca,
                    refused=rf,
                    total_tokens=tokens,
                    latency_p50_ms=l50,
                    latency_p95_ms=l95,
                    ttfb_p50_ms=t50,
                    ttfb_p95_ms=t95,
                )
                for m, n, ok, ue, to, ce, ca, rf, tokens, l50, l95, t50, t95 in cursor.fetchall()
            ]
    rows: dict[str, InsightModelDay] = {}
    latency: dict[str, list[int]] = defaultdict(list)
    ttfb: dict[str, list[int]] = defaultdict(list)
    records = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .exclude(model="")
        .order_by()
        .values_list("model", "outcome", "total_tokens", "latency_ms", "ttfb_ms")
    )
    for model, outcome, tokens, latency_ms, ttfb_ms in records.iterator():
        row = rows.get(model) or rows.setdefault(model, InsightModelDay(day=day, model=model))
        row.requests += 1
        row.total_tokens += tokens
        field = _OUTCOME_FIELDS.get(outcome)
        if field:
            setattr(row, field, getattr(row, field) + 1)
        if outcome == "ok":
            latency[model].append(latency_ms)
            if ttfb_ms is not None:
                ttfb[model].append(ttfb_ms)
    for model, row in rows.items():
        row.latency_p50_ms = _percentile(latency[model], 0.5)
        row.latency_p95_ms = _percentile(latency[model], 0.95)
        row.ttfb_p50_ms = _percentile(ttfb[model], 0.5)
        row.ttfb_p95_ms = _percentile(ttfb[model], 0.95)
    return list(rows.values())


def insights_build(*, day: date) -> int:
    """Rebuild one day's aggregates from its records and ledger rows; safe to run again."""
    start, end = _day_range(day)
    with transaction.atomic():
        model_days = _model_days(day)
        refusals: dict[str, int] = {}
        for code, n in (
            UsageRecord.objects.filter(
                created_at__gte=start, created_at__lt=end, outcome="rate_limited"
            )
            .order_by()
            .values_list("error_code")
            .annotate(n=Count("id"))
        ):
            limit = code.partition(":")[2] or "other"
            refusals[limit] = refusals.get(limit, 0) + n
        served = DailyUsage.objects.filter(day=day, requests__gt=F("errors"))
        active = served.aggregate(
            customers=Count(f"{CUSTOMER}_id", distinct=True), keys=Count("key_id", distinct=True)
        )
        InsightModelDay.objects.filter(day=day).delete()
        InsightModelDay.objects.bulk_create(model_days)
        InsightDay.objects.update_or_create(
            day=day,
            defaults={
                "active_customers": active["customers"] or 0,
                "active_keys": active["keys"] or 0,
                "refusals": refusals,
            },
        )
    return len(model_days)


# --- what the page reads ----------------------------------------------------------------------


@dataclass(slots=True)
class FunnelWeek:
    week: date
    signed_up: int
    verified: int
    first_key: int
    first_success: int
    active_next_week: int


def funnel(*, weeks: int = FUNNEL_WEEKS, today: date | None = None) -> list[FunnelWeek]:
    """Sign-ups per week (from Monday), and how many of them reached each step: one query a
    week, each bounded by the week's sign-ups."""
    today = today or timezone.now().date()
    first = today - timedelta(days=today.weekday() + 7 * (weeks - 1))
    user = get_user_model()
    result = []
    for i in range(weeks):
        week = first + timedelta(days=7 * i)
        start = datetime(week.year, week.month, week.day, tzinfo=UTC)
        served = DailyUsage.objects.filter(**{CUSTOMER: OuterRef("pk")}, requests__gt=F("errors"))
        counts = (
            user.objects.filter(date_joined__gte=start, date_joined__lt=start + timedelta(days=7))
            .annotate(
                is_verified=Exists(EmailAddress.objects.filter(user=OuterRef("pk"), verified=True)),
                has_key=Exists(ApiKey.objects.filter(**{KEY_CUSTOMER: OuterRef("pk")})),
                has_success=Exists(served),
                next_week=Exists(
                    served.filter(
                        day__gte=week + timedelta(days=7), day__lt=week + timedelta(days=14)
                    )
                ),
            )
            .aggregate(
                signed_up=Count("pk"),
                verified=Count("pk", filter=Q(is_verified=True)),
                first_key=Count("pk", filter=Q(has_key=True)),
                first_success=Count("pk", filter=Q(has_success=True)),
                active_next_week=Count("pk", filter=Q(next_week=True)),
            )
        )
        result.append(FunnelWeek(week=week, **counts))
    return result


@dataclass(slots=True)
class Series:
    days: list[date]
    activity: list[InsightDay | None]
    by_model: dict[str, list[InsightModelDay | None]]
    refusals: dict[str, list[int]]


def series(*, days: int = SERIES_DAYS, today: date | None = None) -> Series:
    """The last `days` days of the daily aggregates. Two queries."""
    today = today or timezone.now().date()
    span = [today - timedelta(days=days - 1 - i) for i in range(days)]
    index = {d: i for i, d in enumerate(span)}
    activity: list[InsightDay | None] = [None] * days
    refusals: dict[str, list[int]] = {}
    for row in InsightDay.objects.filter(day__gte=span[0], day__lte=today):
        activity[index[row.day]] = row
        for limit, n in (row.refusals or {}).items():
            refusals.setdefault(limit, [0] * days)[index[row.day]] += int(n)
    by_model: dict[str, list[InsightModelDay | None]] = {}
    for row in InsightModelDay.objects.filter(day__gte=span[0], day__lte=today):
        by_model.setdefault(row.model, [None] * days)[index[row.day]] = row
    return Series(days=span, activity=activity, by_model=by_model, refusals=refusals)


@dataclass(slots=True)
class TopCustomer:
    id: int
    name: str  # the organization's
    plan: str
    tokens: int
    quota: int | None

    @property
    def share(self) -> float | None:
        return self.tokens / self.quota if self.quota else None


def top_customers(*, limit: int = TOP_CUSTOMERS, today: date | None = None) -> list[TopCustomer]:
    """This month's biggest organizations by tokens, with their plan and its monthly token
    quota. Reads the ledgers; two queries (the default plan for those without one)."""
    today = today or timezone.now().date()
    rows = (
        DailyUsage.objects.filter(day__gte=today.replace(day=1), day__lte=today)
        .order_by()
        .values(f"{BILLED}_id", f"{BILLED}__name", f"{BILLED}__plan__name")
        .annotate(tokens=Sum("total_tokens"), quota=F(f"{BILLED}__plan__tokens_per_month"))
        .order_by("-tokens")[:limit]
    )
    default = None
    result = []
    for r in rows:
        plan, quota = r[f"{BILLED}__plan__name"], r["quota"]
        if plan is None:
            default = default or Plan.objects.default() or Plan(name="none")
            plan, quota = default.name, default.tokens_per_month
        result.append(
            TopCustomer(r[f"{BILLED}_id"], r[f"{BILLED}__name"], plan, r["tokens"] or 0, quota)
        )
    return result
