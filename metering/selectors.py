"""Usage reads for the usage page, its CSV export, the admin and `GET /v1/usage`.

Totals are the ledgers plus the records not folded into them yet, read in ONE statement
(`UNION ALL`): one snapshot, so a record is counted either in its ledger or as pending, never
both and never neither, even while aggregation commits. Pending records are at most a minute
or two of traffic and are found through the small UsagePending table.

With a read replica (DATABASE_REPLICA_URL) these reads go there inside `core.db.read_replica()`
(the usage page, the CSV export, the admin's lists); `GET /v1/usage` stays on the primary, as a
program may read it right after its own request. `usage_reads()` is the records' queryset on
whichever database a heavy read goes to now.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from apikeys.keyformat import KEY_PREFIX
from apikeys.models import ApiKey
from core.db import reads_alias
from core.redis import get_redis
from metering.limits import BackendUnavailable, keys, limits_status
from metering.models import DailyUsage, UsageRecord

log = logging.getLogger(__name__)

CHART_DAYS = 30
QUOTA_FIELDS = ("requests_per_day", "tokens_per_day", "requests_per_month", "tokens_per_month")
CSV_HEADER = (
    "day",
    "key",
    "model",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated",
)


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: int = 0  # requests among these whose tokens are an estimate

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.errors += row.errors
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.total_tokens += row.total_tokens
        self.estimated += row.estimated

    def brief(self) -> dict[str, int]:
        return {"requests": self.requests, "tokens": self.total_tokens}

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: date
    key_id: int
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: int = 0
    user_id: int | None = None  # the member who created the key


def _utc_today() -> date:
    return timezone.now().astimezone(UTC).date()


def _month_start(today: date) -> date:
    return today.replace(day=1)


def _next_month(today: date) -> date:
    return (today.replace(day=28) + timedelta(days=4)).replace(day=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def usage_rows(*, org_id: int, since: date) -> list[UsageRow]:
    """The organization's ledger rows from `since` (UTC day) plus pending records, as one
    consistent read."""
    connection = connections[reads_alias()]
    day_expr = (
        "(created_at AT TIME ZONE 'UTC')::date"
        if connection.vendor == "postgresql"
        else "date(created_at)"
    )
    sql = f"""
        SELECT day, key_id, model, requests, errors, prompt_tokens, completion_tokens,
               total_tokens, estimated, user_id
        FROM metering_dailyusage WHERE org_id = %s AND day >= %s
        UNION ALL
        SELECT {day_expr}, key_id, model, 1, CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END,
               prompt_tokens, completion_tokens, total_tokens,
               CASE WHEN estimated THEN 1 ELSE 0 END, user_id
        FROM metering_usagerecord
        WHERE id IN (SELECT record_id FROM metering_usagepending)
          AND org_id = %s AND created_at >= %s
    """  # noqa: S608 - day_expr is one of two constants, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [org_id, since, org_id, _midnight(since)])
        rows = cursor.fetchall()
    return [
        UsageRow(
            day if isinstance(day, date) else date.fromisoformat(day),
            key_id,
            model,
            int(req),
            int(err),
            int(pt),
            int(ct),
            int(tt),
            int(est),
            user_id,
        )
        for day, key_id, model, req, err, pt, ct, tt, est, user_id in rows
    ]


def quota_status(*, plan: Any, today: Totals, month: Totals) -> dict[str, dict]:
    """The plan's daily and monthly quotas against these totals ({} for unlimited ones)."""
    if plan is None:
        return {}
    now_day = _utc_today()
    resets = {
        "day": _midnight(now_day + timedelta(days=1)),
        "month": _midnight(_next_month(now_day)),
    }
    status = {}
    for name in QUOTA_FIELDS:
        limit = getattr(plan, name, None)
        if limit is None:
            continue
        what, _, period = name.split("_")
        totals = today if period == "day" else month
        used = totals.requests if what == "requests" else totals.total_tokens
        status[name] = {
            "limit": limit,
            "used": used,
            "remaining": max(0, limit - used),
            "reset_at": resets[period].isoformat().replace("+00:00", "Z"),
        }
    return status


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _iso(datetime.fromtimestamp(value, tz=UTC))
    return value


def usage_limits(
    *, plan: Any, today: Totals, month: Totals, principal: Any = None, org_id: int | None = None
) -> dict[str, dict]:
    """Every limit as {limit, used, remaining, reset_at (ISO)}: the limits engine's live
    counters for a key's principal (or an organization, by org_id). When the engine's backend
    (Redis) is down, the plan's daily and monthly quotas against the ledger totals instead:
    usage pages keep working without Redis."""
    try:
        if principal is not None:
            status = limits_status(principal=principal, plan=plan)
        else:
            status = limits_status(plan=plan, org_id=org_id)
    except BackendUnavailable as exc:
        log.warning("limits backend unavailable, quotas from the ledgers: %s", exc)
    else:
        return {
            name: {**entry, "reset_at": _iso(entry.get("reset_at"))}
            for name, entry in status.items()
        }
    return quota_status(plan=plan, today=today, month=month)


# --- the usage page -------------------------------------------------------------------------


@dataclass(slots=True)
class Overview:
    days: list[date]
    today: Totals
    month: Totals
    by_model: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    by_key: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    by_member: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    per_day: list[Totals] = field(default_factory=list)

    def chart_data(self) -> dict:
        def series(groups):
            return [
                {"name": name, "requests": values["requests"], "tokens": values["tokens"]}
                for name, values in sorted(groups.items())
            ]

        return {
            "days": [d.isoformat() for d in self.days],
            "model": series(self.by_model),
            "key": series(self.by_key),
            "member": series(self.by_member),
        }


def key_label(name: str, public_id: str) -> str:
    return f"{name} ({KEY_PREFIX}{public_id}…)"


def usage_overview(*, org_id: int, days: int = CHART_DAYS) -> Overview:
    """The organization's requests and tokens per day (split by model, by key and by the
    member who created the key) and today/month totals."""
    today = _utc_today()
    first = today - timedelta(days=days - 1)
    month_start = _month_start(today)
    rows = usage_rows(org_id=org_id, since=min(first, month_start))
    labels = {
        pk: key_label(name, public_id)
        for pk, name, public_id in ApiKey.objects.filter(org_id=org_id).values_list(
            "id", "name", "public_id"
        )
    }
    members = dict(
        User.objects.filter(pk__in={row.user_id for row in rows}).values_list("pk", "email")
    )
    overview = Overview(
        days=[first + timedelta(days=i) for i in range(days)],
        today=Totals(),
        month=Totals(),
        per_day=[Totals() for _ in range(days)],
    )
    empty = {"requests": [0] * days, "tokens": [0] * days}

    def bucket(groups, name):
        if name not in groups:
            groups[name] = {k: list(v) for k, v in empty.items()}
        return groups[name]

    for row in rows:
        if row.day == today:
            overview.today.add(row)
        if row.day >= month_start:
            overview.month.add(row)
        if row.day < first or row.day > today:
            continue
        index = (row.day - first).days
        overview.per_day[index].add(row)
        for groups, name in (
            (overview.by_model, row.model or "(none)"),
            (overview.by_key, labels.get(row.key_id, f"key #{row.key_id}")),
            (overview.by_member, members.get(row.user_id or 0, f"user #{row.user_id}")),
        ):
            values = bucket(groups, name)
            values["requests"][index] += row.requests
            values["tokens"][index] += row.total_tokens
    return overview


# --- GET /v1/usage --------------------------------------------------------------------------


@dataclass(slots=True)
class KeyUsage:
    key_today: Totals
    key_month: Totals
    org_today: Totals
    org_month: Totals


def usage_for_key(*, org_id: int, key_id: int) -> KeyUsage:
    """A key's totals and its organization's, today and this month (UTC)."""
    today = _utc_today()
    usage = KeyUsage(Totals(), Totals(), Totals(), Totals())
    for row in usage_rows(org_id=org_id, since=_month_start(today)):
        mine = row.key_id == key_id
        usage.org_month.add(row)
        if mine:
            usage.key_month.add(row)
        if row.day == today:
            usage.org_today.add(row)
            if mine:
                usage.key_today.add(row)
    return usage


# --- CSV (the customer's export and the admin action) ---------------------------------------


def usage_reads() -> QuerySet[UsageRecord]:
    """The usage records, on the replica inside `read_replica()` (see the module's docstring),
    fixed now: safe to evaluate later (a template, a streamed response)."""
    return UsageRecord.objects.using(reads_alias())


def daily_usage_for_org(*, org_id: int) -> QuerySet[DailyUsage]:
    """The organization's ledger rows, on the database heavy reads go to now (fixed now, for
    a response that streams them after the view returned)."""
    return (
        DailyUsage.objects.using(reads_alias())
        .filter(org_id=org_id)
        .order_by("day", "key_id", "model")
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def daily_usage_csv_lines(*, queryset, include_user: bool = False) -> Iterator[str]:
    """Ledger rows as CSV lines, produced lazily (for streaming); the key is shown by its
    public prefix, never by its database id. Operators also get the customer's email."""
    writer = csv.writer(_Echo())
    fields = [
        "day",
        "key__public_id",
        "model",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "estimated",
    ]
    header = list(CSV_HEADER)
    if include_user:
        fields.insert(1, "user__email")
        header.insert(1, "user")
    yield writer.writerow(header)
    for row in queryset.values_list(*fields).iterator(chunk_size=2000):
        day, *rest = row
        if include_user:
            email, *rest = rest
        public_id, model, *numbers = rest
        cells = [
            day.isoformat(),
            f"{KEY_PREFIX}{public_id}" if public_id else "",
            _csv_safe(model),
            *numbers,
        ]
        if include_user:
            cells.insert(1, _csv_safe(email))
        yield writer.writerow(cells)


def _csv_safe(text: str) -> str:
    # A cell starting with = + - @ is a formula to spreadsheets (CSV injection).
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


# Counting the pending table stops here: past it, the exact figure does not change what to do.
BACKLOG_COUNT_CAP = 100_000


@dataclass(frozen=True, slots=True)
class UsageBacklogs:
    pending_aggregation: int  # records not folded into a ledger yet (capped)
    spooled: int  # records waiting in the Redis spool for the database
    spool_files: int  # local spool files (neither the database nor Redis took their records)
    journal: int  # admitted requests whose record is not written yet

    @property
    def capped(self) -> bool:
        return self.pending_aggregation >= BACKLOG_COUNT_CAP


def usage_backlogs() -> UsageBacklogs:
    """What waits between the API and the ledgers: one bounded count, two Redis calls. On the
    primary: a replica's lag would hide a backlog."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM metering_usagepending LIMIT %s) AS capped",
            [BACKLOG_COUNT_CAP],
        )
        (pending,) = cursor.fetchone()
    spooled = journal = 0
    client = get_redis()
    if client is not None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.llen(keys.spool())
            # journals are per organization: their size as of the reconciler's last pass
            pipe.get(keys.journal_size())
            spooled, journal = pipe.execute()
            journal = int(journal or 0)
        except Exception as exc:  # the dashboard must render with Redis down too
            log.warning("usage_backlogs: Redis unavailable (%s)", exc.__class__.__name__)
    spool_dir = Path(settings.USAGE_SPOOL_DIR)
    files = sum(1 for _ in spool_dir.glob("*.jsonl*")) if spool_dir.exists() else 0
    return UsageBacklogs(pending, spooled, files, journal)
