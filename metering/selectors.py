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
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.models import User
from apikeys.keyformat import KEY_PREFIX
from apikeys.models import ApiKey
from core.db import reads_alias
from core.redis import get_redis
from metering.limits import BackendUnavailable, keys, limits_key_usage, limits_status
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
    """The organization's ledger rows from `since` (UTC day) plus its pending records, as one
    consistent read. Pending records come summed per day, key, model and member, like a
    ledger row: a busy organization has thousands a minute, and the database adds them up
    where they are instead of sending each one to Python (callers only add rows up)."""
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
        SELECT {day_expr}, key_id, model, count(*),
               sum(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END),
               sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),
               sum(CASE WHEN estimated THEN 1 ELSE 0 END), user_id
        FROM metering_usagerecord
        WHERE id IN (SELECT record_id FROM metering_usagepending)
          AND org_id = %s AND created_at >= %s
        GROUP BY 1, 2, 3, 10
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


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """One of a key's budgets: its limit (None: no budget), what the key used in the current
    UTC day or month, what is left (None without a budget) and when the period resets."""

    field: str  # requests_per_day, tokens_per_day, requests_per_month or tokens_per_month
    limit: int | None
    used: int
    remaining: int | None
    reset_at: datetime

    @property
    def label(self) -> str:
        return self.field.replace("_", " ").capitalize()

    @property
    def share(self) -> float | None:
        """How much of the budget is spent, 0.0 to 1.0 (None without a budget)."""
        if not self.limit:
            return None
        return min(1.0, self.used / self.limit)

    def as_dict(self) -> dict[str, Any]:
        """The shape of /v1/usage's limits: limit, used, remaining, reset_at (ISO, UTC)."""
        return {
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "reset_at": _iso(self.reset_at),
        }


def key_budget_usage(*, key: Any) -> dict[str, BudgetUsage]:
    """A key's budgets against its own live counters (the ones admission checks), by field
    name (`requests_per_day`, `tokens_per_day`, `requests_per_month`, `tokens_per_month`).
    `key`: an ApiKey, or the KeyPrincipal of a /v1/ call (both carry the four budgets).

    When the counters are unreachable (Redis down) the key's usage comes from the ledgers
    instead (which trail by up to an aggregation run): pages keep working."""
    key_id = key.key_id if hasattr(key, "key_id") else key.pk
    try:
        counts = limits_key_usage(org_id=key.org_id, key_id=key_id)
        day_end, month_end = counts["day_resets_at"], counts["month_resets_at"]
    except BackendUnavailable as exc:
        log.warning("limits backend unavailable, key budgets from the ledgers: %s", exc)
        usage = usage_for_key(org_id=key.org_id, key_id=key_id)
        counts = {
            "requests_per_day": usage.key_today.requests,
            "tokens_per_day": usage.key_today.total_tokens,
            "requests_per_month": usage.key_month.requests,
            "tokens_per_month": usage.key_month.total_tokens,
        }
        now_day = _utc_today()
        day_end, month_end = _midnight(now_day + timedelta(days=1)), _midnight(_next_month(now_day))
    budgets = {}
    for name in QUOTA_FIELDS:
        limit = getattr(key, name)
        used = int(counts[name])
        budgets[name] = BudgetUsage(
            field=name,
            limit=limit,
            used=used,
            remaining=None if limit is None else max(0, limit - used),
            reset_at=day_end if name.endswith("_day") else month_end,
        )
    return budgets


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


# --- the request log (/requests, its detail page and CSV) ---------------------------------
#
# The request log: an organization's usage records, filtered and paged for /requests, its
# detail page and its CSV export (one reader for all three).
#
# The table is the biggest there is, so the reads are shaped for its indexes:
# - keyset pagination on (created_at, id), newest first: a page is one indexed range scan of
#   LIMIT n+1 rows, whatever its depth; no OFFSET and no COUNT(*);
# - every filter has an index that starts with it (migration 0009): the organization's recent
#   records (`usage_org_recent`), a key's (`usage_log_key`), a model's, an outcome's and a status
#   class's (`usage_log_model`, `usage_log_outcome`, `usage_log_status`, the last on the
#   expression http_status / 100); a date range narrows the created_at part of any of them; a
#   request id is the unique index itself.
# No prompt or completion text exists to read: a record holds counts and timings only.

PAGE_SIZE = 50
CSV_BATCH = 2000
STATUS_CLASSES = {"2xx": 2, "4xx": 4, "5xx": 5}
LOG_FIELDS = (
    "id", "request_id", "created_at", "key_id", "model", "endpoint", "streamed", "outcome",
    "http_status", "error_code", "prompt_tokens", "completion_tokens", "total_tokens",
    "estimated", "latency_ms", "ttfb_ms",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LogFilters:
    """What the log is narrowed to; every field optional. Built from a query string by
    `LogFilters.parse`, which never raises: what it cannot read it drops, and says so."""

    key_id: int | None = None
    model: str = ""
    outcome: str = ""
    status_class: str = ""  # 2xx, 4xx or 5xx
    since: date | None = None  # from this UTC day on
    until: date | None = None  # up to and including this UTC day
    request_id: str = ""

    @classmethod
    def parse(cls, params) -> tuple[LogFilters, list[str]]:
        problems: list[str] = []

        def day(name: str) -> date | None:
            raw = (params.get(name) or "").strip()
            if not raw:
                return None
            try:
                return date.fromisoformat(raw)
            except ValueError:
                problems.append(f"“{raw}” is not a date (YYYY-MM-DD); {name} ignored.")
                return None

        key_raw = (params.get("key") or "").strip()
        key_id = int(key_raw) if key_raw.isdigit() and len(key_raw) < 19 else None
        if key_raw and key_id is None:
            problems.append("Unknown key; the key filter is ignored.")
        outcome = (params.get("outcome") or "").strip()
        if outcome and outcome not in UsageRecord.Outcome.values:
            problems.append(f"Unknown outcome “{outcome[:40]}”; ignored.")
            outcome = ""
        status_class = (params.get("status") or "").strip()
        if status_class and status_class not in STATUS_CLASSES:
            problems.append("The status filter is 2xx, 4xx or 5xx; ignored.")
            status_class = ""
        return (
            cls(
                key_id=key_id,
                model=(params.get("model") or "").strip()[:128],
                outcome=outcome,
                status_class=status_class,
                since=day("from"),
                until=day("to"),
                request_id=(params.get("q") or "").strip()[:64],
            ),
            problems,
        )

    def as_query(self) -> dict[str, str]:
        """The filters as query parameters (for links to the next page and the CSV)."""
        query = {
            "key": str(self.key_id) if self.key_id is not None else "",
            "model": self.model,
            "outcome": self.outcome,
            "status": self.status_class,
            "from": self.since.isoformat() if self.since else "",
            "to": self.until.isoformat() if self.until else "",
            "q": self.request_id,
        }
        return {name: value for name, value in query.items() if value}


def retention_start() -> datetime:
    """Records older than this are pruned (USAGE_RETENTION_DAYS): the log starts here."""
    return timezone.now() - timedelta(days=settings.USAGE_RETENTION_DAYS)


def request_log_queryset(*, org_id: int, filters: LogFilters) -> QuerySet[UsageRecord]:
    """The organization's records matching `filters`, newest first by (created_at, id); on the
    database heavy reads go to now (the replica inside `read_replica()`), fixed now, so a
    streamed CSV reads where its page did."""
    records = usage_reads().filter(org_id=org_id)
    if filters.request_id:
        records = records.filter(request_id=filters.request_id)
    if filters.key_id is not None:
        records = records.filter(key_id=filters.key_id)
    if filters.model:
        records = records.filter(model=filters.model)
    if filters.outcome:
        records = records.filter(outcome=filters.outcome)
    if filters.status_class:
        # The same expression as the index usage_log_status, so the planner can use it.
        records = records.alias(status_class=F("http_status") / 100).filter(
            status_class=STATUS_CLASSES[filters.status_class]
        )
    if filters.since:
        records = records.filter(created_at__gte=_midnight(filters.since))
    if filters.until:
        records = records.filter(created_at__lt=_midnight(filters.until + timedelta(days=1)))
    return records.order_by("-created_at", "-id")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        delta = self.created_at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, raw: str | None) -> Cursor | None:
        """None for anything that is not a cursor this module made (a bad link: page one)."""
        micros, _, pk = (raw or "").partition(".")
        if not (micros.isdigit() and pk.isdigit()) or len(micros) > 18 or len(pk) > 18:
            return None
        try:
            at = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            return None
        return cls(created_at=at, id=int(pk))


def _after(records: QuerySet[UsageRecord], cursor: Cursor | None) -> QuerySet[UsageRecord]:
    if cursor is None:
        return records
    return records.filter(
        Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)
    )


@dataclass(frozen=True, slots=True)
class LogPage:
    records: list[UsageRecord]
    next_cursor: str | None  # None: this is the last page


def request_log_page(
    *, org_id: int, filters: LogFilters, cursor: str | None = None, size: int = PAGE_SIZE
) -> LogPage:
    """One page of the log: `size` records after `cursor` (one query, LIMIT size + 1)."""
    records = _after(request_log_queryset(org_id=org_id, filters=filters), Cursor.decode(cursor))
    rows = list(records.only(*LOG_FIELDS)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = Cursor(rows[-1].created_at, rows[-1].pk).encode() if more and rows else None
    return LogPage(records=rows, next_cursor=next_cursor)


def request_log_record(*, org_id: int, request_id: str) -> UsageRecord | None:
    """One record of the organization's by its request id (None: not theirs, or not kept)."""
    if not request_id or len(request_id) > 64:
        return None
    return UsageRecord.objects.filter(org_id=org_id, request_id=request_id).first()


CSV_COLUMNS = (
    "created_at", "request_id", "key", "model", "endpoint", "streamed", "outcome",
    "http_status", "error_code", "prompt_tokens", "completion_tokens", "total_tokens",
    "estimated", "latency_ms", "ttfb_ms",
)  # fmt: skip


def request_log_csv_lines(
    *, org_id: int, filters: LogFilters, key_labels: dict[int, str]
) -> Iterator[str]:
    """Exactly the filtered records as CSV lines, newest first, produced lazily (for a
    streamed response) in keyset batches: bounded memory, no cursor held open between them.
    The queryset (and so its database: the replica inside `read_replica()`) is fixed here, in
    the view, not when the response is streamed after it returned."""
    records = request_log_queryset(org_id=org_id, filters=filters).only(*LOG_FIELDS)
    return _request_log_csv_rows(records, key_labels)


def _request_log_csv_rows(
    records: QuerySet[UsageRecord], key_labels: dict[int, str]
) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    cursor: Cursor | None = None
    while True:
        batch = list(_after(records, cursor)[:CSV_BATCH])
        for r in batch:
            yield writer.writerow(
                [
                    r.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    r.request_id,
                    key_labels.get(r.key_id, ""),
                    r.model,
                    r.endpoint,
                    "true" if r.streamed else "false",
                    r.outcome,
                    r.http_status,
                    r.public_error_code,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.total_tokens,
                    "true" if r.estimated else "false",
                    r.latency_ms,
                    "" if r.ttfb_ms is None else r.ttfb_ms,
                ]
            )
        if len(batch) < CSV_BATCH:
            return
        cursor = Cursor(batch[-1].created_at, batch[-1].pk)
