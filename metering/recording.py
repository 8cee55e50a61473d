"""Writing usage records: one per authenticated API request, idempotent on the request id.

Called when a request ends, however it ends. Under gevent every greenlet would hold its own
database connection; with psycopg's pool (settings.DATABASES) the write borrows one of at most
DB_POOL_MAX_SIZE connections and gives it back when Django closes it at request_finished
(which, for a stream, fires when the server closes the response after the generator's last
`finally`), so the number of PostgreSQL connections stays bounded whatever the number of open
streams: a stream holds no connection while it streams.

If the database cannot take the record (PostgreSQL restarting, the pool exhausted), it is
spooled rather than lost: to a Redis list shared by every host, or, if Redis is down too, to
an fsync'ed file in var/usage-spool/. `usage_spool_drain` (beat, every 30 s, and before each
aggregation) moves spooled records into the table; the request id keeps it idempotent.

A record the database refuses for what it holds (a count out of range, a broken constraint)
is quarantined (QuarantinedUsage, with the error) instead, so it never blocks the records
written with it or after it.

Two writers stand behind one interface (`record_writer()`): with Redis, a batch writer per
process; without, a direct write in the request. Both write the record first and settle the
admission after, so a request is never settled (its journal entry gone) without a record.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apikeys.models import ApiKey
from core import metrics
from core.db import release_connection
from core.redis import get_redis, scan_all
from metering.limits import keys, limits_settle_many
from metering.limits.base import JournalLine
from metering.models import DailyUsage, QuarantinedUsage, UsagePending, UsageRecord

log = logging.getLogger(__name__)

DRAIN_BATCH = 500
# A drain's claim (Redis processing list or renamed spool file) older than this belonged to a
# drain that died: the next drain takes it over. Drains run under a 60 s task time limit.
CLAIM_STALE_SECONDS = 300
LOST_CODE = "request_lost"  # error_code of a record written from the admission journal
MAX_COUNT = 2**63 - 1  # a bigint column's top


@dataclass(slots=True)
class Usage:
    request_id: str
    user_id: int  # the member who created the key
    key_id: int
    endpoint: str
    org_id: int | None = None  # the organization that owns the key (always set by /v1/)
    model: str = ""
    pool: str = ""
    router_id: int | None = None
    streamed: bool = False
    outcome: str = UsageRecord.Outcome.OK
    http_status: int = 200
    error_code: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The counts are the portal's estimate, or were clamped from what the router reported.
    estimated: bool = False
    admitted: bool = False
    latency_ms: int = 0
    ttfb_ms: int | None = None
    created_at: datetime = field(default_factory=timezone.now)
    end_user: str | None = None  # the request's `user` parameter

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def row(self) -> dict:
        # Field by field rather than dataclasses.asdict, which deep-copies every value (50 us
        # a record, twice a request: the journal entry and the batch): the values here are
        # immutable (strings, numbers, a datetime), so the copy bought nothing.
        values = {name: getattr(self, name) for name in _USAGE_FIELDS}
        values["total_tokens"] = self.total_tokens
        return values


_USAGE_FIELDS = tuple(f.name for f in fields(Usage))


# --- inserting records --------------------------------------------------------------------------

# What a record's own content can make the database (or the driver) refuse. Anything else (a
# lost connection, a full pool) means the database is unavailable: the caller spools.
_BAD_RECORD = (DataError, IntegrityError, OverflowError, ValueError, TypeError)


def _invalid(row: dict) -> str:
    """Why the database must not be asked to take this row ('' if it may)."""
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "latency_ms"):
        value = row.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            return f"{name} out of range: {value!r}"
    return ""


def _quarantine(row: dict, error: object, source: str) -> None:
    raw = json.dumps(row, default=str)
    log.error(
        "usage record quarantined: %s",
        error,
        extra={"usage_request_id": row.get("request_id"), "source": source},
    )
    QuarantinedUsage.objects.create(
        request_id=str(row.get("request_id", ""))[:64], raw=raw, error=str(error), source=source
    )
    metrics.USAGE_QUARANTINED.inc()


def _insert_one(row: dict, source: str) -> bool:
    """Insert one record; quarantine it if refused for its content. True if it is new."""
    try:
        with transaction.atomic():
            UsageRecord.objects.create(**row)
        return True
    except IntegrityError as exc:
        if UsageRecord.objects.filter(request_id=row["request_id"]).exists():
            return False  # a duplicate: the record is there already
        _quarantine(row, exc, source)
    except _BAD_RECORD as exc:
        _quarantine(row, exc, source)
    return False


def records_insert(rows: list[dict], *, source: str, journal: bool = False) -> int:
    """Insert records (UsageRecord field values); returns how many were new.

    Records refused for their content are quarantined, one by one, and the rest still go in.
    A real record replaces one written from the admission journal for the same request; with
    `journal` (these rows come from the journal) an existing record is never replaced.
    Raises DatabaseError when the database is unavailable: nothing was written, spool them."""
    unique: dict[str, dict] = {}
    for row in rows:
        problem = _invalid(row)
        if problem:
            _quarantine(row, problem, source)
        else:
            unique.setdefault(row["request_id"], row)
    if not unique:
        return 0
    rows = list(unique.values())
    try:
        inserted = _insert_many(rows)
    except _BAD_RECORD:
        # One row failed the whole statement: find it, and let the others through.
        existing = _recorded_already(rows)
        inserted = {
            row["request_id"]
            for row in rows
            if row["request_id"] not in existing and _insert_one(row, source)
        }
    if not journal:
        # Only a request whose record was there already can have a journal stand-in (the
        # request's process looked dead): checked for those alone, after the insert, so a
        # stand-in written between our check and our insert is seen too.
        conflicted = [row for rid, row in unique.items() if rid not in inserted]
        _replace_journal_records(conflicted, source=source)
    return len(inserted)


# Records of one request carry its admission's timestamp whoever writes them (the unique key
# is (request_id, created_at)); the look-up by request id alone, within this margin of the
# batch's timestamps, also keeps out a copy stamped differently, and reads one or two month
# partitions instead of every one.
RECORDED_MARGIN = timedelta(days=1)


def _recorded_already(rows: list[dict]) -> set[str]:
    stamps = [row["created_at"] for row in rows if isinstance(row.get("created_at"), datetime)]
    records = UsageRecord.objects.filter(request_id__in=[row["request_id"] for row in rows])
    if len(stamps) == len(rows):
        records = records.filter(
            created_at__gte=min(stamps) - RECORDED_MARGIN,
            created_at__lte=max(stamps) + RECORDED_MARGIN,
        )
    return set(records.values_list("request_id", flat=True))


# The record's columns but its id: what a batch inserts.
_COPY_FIELDS = [field for field in UsageRecord._meta.concrete_fields if not field.primary_key]
_COPY_COLUMNS = ", ".join(str(field.column) for field in _COPY_FIELDS)
_ROW_KEYS = {field.attname for field in _COPY_FIELDS}
# What a row from an older journal or spool line lacks is the field's default.
_DEFAULTS = {field.attname: field.get_default() for field in _COPY_FIELDS}
# The batch goes to PostgreSQL as JSON keyed by attribute name, which json_populate_recordset
# reads as the column's name: true of every UsageRecord field (no db_column).
if any(field.attname != field.column for field in _COPY_FIELDS):
    raise TypeError("usage record fields must be named as their columns")


def _insert_many(rows: list[dict]) -> set[str]:
    """Insert the records not written already; returns the request ids inserted.

    Written already: a record with the same request id within RECORDED_MARGIN of the batch's
    timestamps (whatever its own timestamp), or with the same (request_id, created_at).

    On PostgreSQL one statement, one round trip, in autocommit: the look-up (a materialized
    CTE, so it is planned alone and probes the unique index by request id, where a join of the
    batch against the table read the look-up's whole window through the `created_at` index:
    16 ms a batch at 11,000 records, growing with the table) and the INSERT of the rest from
    the batch sent as one JSON value (json_populate_recordset), ON CONFLICT DO NOTHING for a
    record another writer put in meanwhile; RETURNING says which rows it took, so journal
    stand-ins are looked for only among the others. It replaced a temporary stage filled by
    COPY (BEGIN, CREATE TEMP TABLE, COPY, INSERT ... SELECT, COMMIT and the look-up: seven
    round trips a batch).
    Elsewhere (SQLite: one writer) the look-up, then a multi-row INSERT.
    """
    if connection.vendor != "postgresql":
        existing = _recorded_already(rows)
        new = [row for row in rows if row["request_id"] not in existing]
        with transaction.atomic():
            UsageRecord.objects.bulk_create(
                [UsageRecord(**row) for row in new], ignore_conflicts=True
            )
        return {row["request_id"] for row in new}
    batch = []
    for row in rows:
        if row.keys() != _ROW_KEYS:
            unknown = row.keys() - _ROW_KEYS
            if unknown:  # what bulk_create would refuse: quarantined, not silently dropped
                raise TypeError(f"unknown usage record fields: {sorted(unknown)}")
            row = {**_DEFAULTS, **row}
        batch.append(row)
    stamps = [row["created_at"] for row in rows if isinstance(row.get("created_at"), datetime)]
    params: list = [[row["request_id"] for row in rows]]
    window = ""
    if len(stamps) == len(rows):
        window = " AND created_at >= %s AND created_at <= %s"
        params += [min(stamps) - RECORDED_MARGIN, max(stamps) + RECORDED_MARGIN]
    params.append(json.dumps(batch, default=str))
    table = UsageRecord._meta.db_table
    sql = (
        f"WITH done AS MATERIALIZED (SELECT request_id FROM {table} "  # noqa: S608
        f"WHERE request_id = ANY(%s){window}) "
        f"INSERT INTO {table} ({_COPY_COLUMNS}) SELECT {_COPY_COLUMNS} "
        f"FROM json_populate_recordset(NULL::{table}, %s) "
        "WHERE request_id NOT IN (SELECT request_id FROM done) "
        "ON CONFLICT DO NOTHING RETURNING request_id"
    )
    # A single statement needs no transaction of its own; inside someone's, a savepoint keeps
    # a refused batch from breaking it (the caller then inserts row by row).
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with savepoint, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _replace_journal_records(rows: list[dict], *, source: str) -> None:
    """Where a record written from the admission journal (the request's process looked dead)
    stands in for one of these real records, put the real one in its place, and take the
    journal record back out of its daily ledger if it was folded in already."""
    if not rows:
        return
    by_id = {row["request_id"]: row for row in rows}
    stand_ins = UsageRecord.objects.filter(request_id__in=list(by_id), error_code=LOST_CODE)
    if not stand_ins.exists():
        return
    with transaction.atomic():
        lost = list(stand_ins.select_for_update())
        if not lost:
            return
        # Deleting the pending rows first also waits for an aggregation that holds them: a
        # record whose pending row is gone afterwards is in a ledger.
        unfolded = _delete_pending([record.id for record in lost])
        for record in lost:
            if record.id not in unfolded:
                _unfold(record)
        UsageRecord.objects.filter(id__in=[record.id for record in lost]).delete()
        for record in lost:
            _insert_one(by_id[record.request_id], source)
    log.warning("usage: %d real records replaced their admission-journal stand-ins", len(lost))


def _delete_pending(record_ids: list[int]) -> set[int]:
    table = UsagePending._meta.db_table
    marks = ", ".join(["%s"] * len(record_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE record_id IN ({marks}) RETURNING record_id",  # noqa: S608
            record_ids,
        )
        return {row[0] for row in cursor.fetchall()}


def _unfold(record: UsageRecord) -> None:
    DailyUsage.objects.filter(
        day=record.created_at.astimezone(UTC).date(),
        user_id=record.user_id,
        key_id=record.key_id,
        model=record.model,
    ).update(
        requests=F("requests") - 1,
        errors=F("errors") - (0 if record.outcome == UsageRecord.Outcome.OK else 1),
        prompt_tokens=F("prompt_tokens") - record.prompt_tokens,
        completion_tokens=F("completion_tokens") - record.completion_tokens,
        total_tokens=F("total_tokens") - record.total_tokens,
        estimated=F("estimated") - (1 if record.estimated else 0),
    )


def _rows(lines: list[str]) -> list[dict]:
    rows = []
    for line in lines:
        data = json.loads(line)
        data["created_at"] = parse_datetime(data["created_at"])
        rows.append(data)
    # Spooled or journaled before organizations: the organization is the key's.
    unknown = {row["key_id"] for row in rows if row.get("org_id") is None}
    if unknown:
        orgs = dict(ApiKey.objects.filter(pk__in=unknown).values_list("pk", "org_id"))
        for row in rows:
            if row.get("org_id") is None:
                row["org_id"] = orgs.get(row["key_id"])
    return rows


def usage_record_write(usage: Usage) -> bool:
    """Store the record (or spool it); False if one with this request id exists already."""
    row = usage.row()
    problem = _invalid(row)
    if problem:
        _quarantine(row, problem, "direct")
        return True
    try:
        with transaction.atomic():
            UsageRecord.objects.create(**row)
        return True
    except IntegrityError as exc:
        existing = UsageRecord.objects.filter(request_id=usage.request_id).first()
        if existing is None:
            _quarantine(row, exc, "direct")
            return True
        if existing.error_code == LOST_CODE and usage.error_code != LOST_CODE:
            _replace_journal_records([row], source="direct")
            return True
        return False
    except _BAD_RECORD as exc:
        _quarantine(row, exc, "direct")
        return True
    except DatabaseError as exc:
        if transaction.get_connection().in_atomic_block:
            raise  # inside someone's transaction: theirs to handle
        log.warning(
            "usage record spooled: database unavailable (%s)",
            exc.__class__.__name__,
            extra={"usage_request_id": usage.request_id},
        )
        _spool(usage)
        return True


# --- the spool ------------------------------------------------------------------------------------

# Claim up to ARGV[1] records for one drain: each moves atomically from the spool to the drain's
# own processing list, so no two drains ever hold the same record, and a drain that dies leaves
# its claim where the next drain finds it (the claims set, scored by claim time).
CLAIM_LUA = """
-- KEYS[1] the spool, KEYS[2] this drain's processing list, KEYS[3] the claims sorted set
-- ARGV[1] how many records to claim, ARGV[2] now (seconds)
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
for i = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') then break end
end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# Give a claim back to the head of the spool in its order (the database went away mid-drain).
UNCLAIM_LUA = """
-- KEYS[1] the spool, KEYS[2] a processing list, KEYS[3] the claims sorted set
while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do end
redis.call('ZREM', KEYS[3], KEYS[2])
return 1
"""


def _spool_dir() -> Path:
    return Path(settings.USAGE_SPOOL_DIR)


def _spool(usage: Usage) -> None:
    _spool_line(json.dumps(usage.row(), default=str))


def _spool_line(line: str) -> None:
    client = get_redis()
    if client is not None:
        try:
            client.rpush(keys.spool(), line)
            return
        except Exception as exc:
            log.warning("usage spool: Redis unavailable too (%s)", exc.__class__.__name__)
    _spool_file_append(line)


def _spool_file_append(line: str) -> None:
    directory = _spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.jsonl"
    while True:
        with open(path, "a") as spool:
            # A drain renames the file, then takes this lock before reading it: holding the
            # lock on the file still at `path` means no drain has read it yet.
            fcntl.flock(spool.fileno(), fcntl.LOCK_EX)
            try:
                if os.fstat(spool.fileno()).st_ino != os.stat(path).st_ino:
                    continue  # claimed by a drain since we opened it: write a new one
            except FileNotFoundError:
                continue
            spool.write(line + "\n")
            spool.flush()
            os.fsync(spool.fileno())
            return


def _drain_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _drain_redis(client) -> int:
    claim_script = client.register_script(CLAIM_LUA)
    unclaim_script = client.register_script(UNCLAIM_LUA)
    spool, claims = keys.spool(), keys.spool_claims()
    moved = 0
    # First the claims of drains that died holding them.
    stale_before = time.time() - CLAIM_STALE_SECONDS
    for stale in client.zrangebyscore(claims, "-inf", stale_before):
        stale = stale.decode()
        lines = [b.decode() for b in client.lrange(stale, 0, -1)]
        if lines:
            log.warning("usage spool: taking over a dead drain's claim of %d records", len(lines))
            moved += records_insert(_rows(lines), source="spool")
        client.delete(stale)
        client.zrem(claims, stale)
    claim = keys.spool_claim(_drain_id())
    while True:
        raw = claim_script(keys=[spool, claim, claims], args=[DRAIN_BATCH, int(time.time())])
        lines = [b.decode() for b in raw]
        if not lines:
            break
        try:
            moved += records_insert(_rows(lines), source="spool")
        except DatabaseError:
            unclaim_script(keys=[spool, claim, claims])
            raise
        client.delete(claim)
    client.zrem(claims, claim)
    return moved


def _owner_gone(claimed: Path) -> bool:
    """A claimed spool file whose drain died (or hung) long ago."""
    try:
        pid = int(claimed.suffix.rsplit("-", 1)[-1])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        pass
    try:
        return claimed.stat().st_mtime < time.time() - CLAIM_STALE_SECONDS
    except FileNotFoundError:
        return False


def _drain_files() -> int:
    directory = _spool_dir()
    if not directory.is_dir():
        return 0
    moved = 0
    candidates = sorted(directory.glob("*.jsonl")) + [
        path for path in sorted(directory.glob("*.draining-*")) if _owner_gone(path)
    ]
    for path in candidates:
        stem = path.name.split(".")[0]
        claimed = directory / f"{stem}.{secrets.token_hex(4)}.draining-{os.getpid()}"
        try:
            path.rename(claimed)  # atomic: one drainer per file
        except FileNotFoundError:
            continue
        with open(claimed) as spool:
            fcntl.flock(spool.fileno(), fcntl.LOCK_EX)  # a writer mid-line finishes first
            lines = [line for line in spool.read().splitlines() if line.strip()]
        for start in range(0, len(lines), DRAIN_BATCH):
            moved += records_insert(_rows(lines[start : start + DRAIN_BATCH]), source="spool")
        claimed.unlink(missing_ok=True)
    return moved


def usage_spool_drain() -> int:
    """Move spooled records into the table (safe to run anywhere, twice, or at once)."""
    moved = 0
    client = get_redis()
    if client is not None:
        moved += _drain_redis(client)
    moved += _drain_files()
    if moved:
        log.info("usage spool drained", extra={"records": moved})
    return moved


# --- the admission journal ------------------------------------------------------------------------


def journal_entry(usage: Usage, *, prompt_tokens: int) -> str:
    """The record to write if the process serving this request dies before it ends (SIGKILL,
    OOM): admission stores it in Redis, settling removes it, and `usage_journal_reconcile`
    writes the ones whose lease ran out. The tokens are the prompt estimate; what was streamed
    before the process died is unknown. A live stream keeps pushing its due time back."""
    row = usage.row()
    row.update(
        outcome=UsageRecord.Outcome.CANCELLED,
        http_status=499,
        error_code=LOST_CODE,
        estimated=True,
        admitted=True,
        prompt_tokens=prompt_tokens,
        completion_tokens=0,
        total_tokens=prompt_tokens,
    )
    return json.dumps(row, default=str)


# A refused request's record waits in the batch writer's queue for milliseconds; this long in
# the journal (or the in-flight lease, if shorter: when a process counts as dead) covers a
# database outage's spooling too before the reconciler steps in.
REFUSED_JOURNAL_MS = 120_000


def refused_journal_line(usage: Usage, *, now_ms: int) -> JournalLine:
    """The journal entry of a request refused before admission: its record exactly as it will
    be written (nothing about it is unknown), due once the writer should long have written it.
    A refused request has no admission to settle, so the writer removes the entry itself."""
    return JournalLine(
        member=_refused_member(usage.request_id),
        line=json.dumps(usage.row(), default=str),
        due_ms=now_ms + min(REFUSED_JOURNAL_MS, settings.LIMITS_INFLIGHT_LEASE_SECONDS * 1000),
        org_base=keys.org_base(usage.org_id or 0),
    )


def _refused_member(request_id: str) -> str:
    return f"refused:{request_id}"


def _unjournal_refused(usages: list[Usage]) -> None:
    """Take written (or spooled) refused records out of the journal. Never raises: an entry
    left behind is written by the reconciler as a duplicate that the record's id refuses."""
    client = get_redis() if usages else None
    if client is None:
        return
    by_org: dict[str, list[str]] = {}
    for usage in usages:
        members = by_org.setdefault(keys.org_base(usage.org_id or 0), [])
        members.append(_refused_member(usage.request_id))
    try:
        pipe = client.pipeline(transaction=False)  # on a cluster: one batch per node
        for org_base, members in by_org.items():
            pipe.hdel(keys.journal(org_base), *members)
            pipe.zrem(keys.journal_due(org_base), *members)
        pipe.execute()
    except Exception as exc:
        log.warning("usage journal: refused entries not removed (%s)", exc)


# How many organizations of the journal index one pipelined round trip looks at.
INDEX_BATCH = 200

# Drop an indexed organization whose journal is empty, unless a process indexed it again
# since `ARGV[2]` (it may be about to journal). KEYS[1] the index; ARGV[1] the org_base.
FORGET_LUA = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


def usage_journal_reconcile() -> int:
    """Write a record for every admitted request whose process died before settling, and for
    every refused request whose process died before its writer wrote it.

    Each organization has its own journal (keys.journal: in its slot, for admit.lua on a
    cluster); the journal index names every organization that may have entries, so this walks
    the index (a few pipelined round trips per INDEX_BATCH organizations), not the keyspace."""
    client = get_redis()
    if client is None:
        return 0
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    written = _reconcile_journal(client, keys.legacy_journal(), keys.legacy_journal_due(), now_ms)
    if client.set(keys.journal_swept(), now_ms, nx=True, ex=SWEEP_SECONDS):
        _journal_index_repair(client, now_ms)
    index = keys.journal_index()
    forget = client.register_script(FORGET_LUA)
    stale_before = now_ms - keys.INDEX_FORGET_MS
    size = 0
    # ZSCAN: an organization indexed for the whole pass is seen, whatever is added or removed
    batch: list[str] = []
    for member, _score in client.zscan_iter(index, count=INDEX_BATCH):
        batch.append(member.decode())
        if len(batch) >= INDEX_BATCH:
            size, written = _reconcile_orgs(
                client, batch, now_ms, stale_before, forget, size, written
            )
            batch = []
    if batch:
        size, written = _reconcile_orgs(client, batch, now_ms, stale_before, forget, size, written)
    client.set(keys.journal_size(), size)
    if written:
        log.warning("usage journal: wrote %d records of requests whose process died", written)
    return written


# How often one reconciler (of all) also SCANs the keyspace for journals the index lost.
SWEEP_SECONDS = 3600


def _journal_index_repair(client, now_ms: int) -> int:
    """Index every organization journal found by SCAN on every primary. The index can lose an
    organization its processes still think indexed (Redis lost its data and came back within
    keys.INDEX_REFRESH_MS): such a journal waits for this sweep at worst."""
    suffix = keys.journal_due(keys.org_base(0)).removeprefix(keys.org_base(0))
    pattern = _glob_escape(keys.key_prefix()) + ":{o*}" + _glob_escape(suffix)
    found = {
        name.decode().removesuffix(suffix) for name in scan_all(client, match=pattern, type_="zset")
    }
    if found:
        client.zadd(keys.journal_index(), dict.fromkeys(found, now_ms), nx=True)
    return len(found)


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _reconcile_orgs(client, orgs, now_ms, stale_before, forget, size, written):
    """One pipelined look at a batch of indexed organizations, then their due entries."""
    pipe = client.pipeline(transaction=False)
    for org_base in orgs:
        pipe.zrangebyscore(keys.journal_due(org_base), "-inf", now_ms, start=0, num=1)
        pipe.hlen(keys.journal(org_base))
    found = pipe.execute()
    for i, org_base in enumerate(orgs):
        due, entries = found[2 * i], found[2 * i + 1]
        if due:
            written += _reconcile_journal(
                client, keys.journal(org_base), keys.journal_due(org_base), now_ms
            )
            entries = client.hlen(keys.journal(org_base))
        size += entries
        if not entries:
            forget(keys=[keys.journal_index()], args=[org_base, stale_before])
    return size, written


def _reconcile_journal(client, journal: str, due: str, now_ms: int) -> int:
    """Write the records of one journal's entries due by `now_ms`, then remove them."""
    written = 0
    while True:
        members = client.zrangebyscore(due, "-inf", now_ms, start=0, num=DRAIN_BATCH)
        if not members:
            break
        lines = [line.decode() for line in client.hmget(journal, members) if line]
        if lines:
            # A record the request wrote itself wins (same id); this one never replaces it.
            written += records_insert(_rows(lines), source="journal", journal=True)
        pipe = client.pipeline(transaction=False)
        pipe.hdel(journal, *members)
        pipe.zrem(due, *members)
        pipe.execute()
    return written


# --- writers: write the record, then settle ----------------------------------------------------


class RecordWriter:
    """Takes the record of a request that ended and its admission (None for a request refused
    before admission): writes the record, then settles the admission. Never raises."""

    def submit(self, usage: Usage, admission) -> None:
        raise NotImplementedError


class DirectWriter(RecordWriter):
    """Writes in the request (the embedded default, without Redis)."""

    def submit(self, usage: Usage, admission) -> None:
        try:
            usage_record_write(usage)
        except Exception:
            metrics.USAGE_WRITE_FAILURES.inc()
            # Never let metering turn an answered request into a 500. The admission stays
            # unsettled: its journal entry (with Redis) writes the record once its lease ends.
            log.exception(
                "usage record could not be written", extra={"usage_request_id": usage.request_id}
            )
            return
        if admission is not None:
            admission.settle(total_tokens=usage.total_tokens)
        # A refused request written here was never journaled (`usage_refused`): nothing to undo.


class UsageWriter(RecordWriter):
    """Writes usage records off the request greenlets, in batches (production, with Redis).

    A request that ends hands its record and its limits admission here (its concurrency slot
    was released already, when the client got its answer). Every FLUSH_SECONDS the writer
    inserts the batch in one statement, then settles the batch's admissions in one Redis
    pipeline. Settling is what removes a request's admission journal entry (see
    `journal_entry`), so until its record is in the table a request stays recoverable: if
    this process dies with records queued, `usage_journal_reconcile` writes them (with the
    admission's estimate) once their lease runs out. Nothing queued is only in memory: the
    records of requests refused before admission are journaled whole (`refused_journal_line`)
    and taken out of the journal once written.

    Per request this replaces a transaction (BEGIN, INSERT, COMMIT and a WAL flush) and a
    Redis round trip with a share of one batched INSERT and one pipelined round trip.
    """

    FLUSH_SECONDS = 0.05
    MAX_BATCH = 500

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, usage: Usage, admission) -> None:
        self._queue.append((usage, admission))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    import atexit

                    self._thread = threading.Thread(
                        target=self._run, daemon=True, name="usage-writer"
                    )
                    self._thread.start()
                    atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:
                log.exception("usage writer: flush failed")

    def flush(self) -> int:
        """Write and settle everything queued now (also called at worker exit)."""
        written = 0
        with self._lock:  # one flusher at a time: the loop, or an exit hook
            while self._queue:
                batch: list = []
                while self._queue and len(batch) < self.MAX_BATCH:
                    batch.append(self._queue.popleft())
                written += self._write_then_settle(batch)
        return written

    def _write_then_settle(self, batch: list) -> int:
        settle = batch
        try:
            records_insert([usage.row() for usage, _ in batch], source="writer")
        except DatabaseError as exc:
            log.warning(
                "usage writer: database unavailable (%s), spooling %d records",
                exc.__class__.__name__,
                len(batch),
            )
            settle = []
            for usage, admission in batch:
                try:
                    _spool(usage)
                except Exception:  # neither Redis nor the disk: the journal still has it
                    log.exception("usage writer: could not spool %s", usage.request_id)
                    continue
                settle.append((usage, admission))
        finally:
            release_connection()
        limits_settle_many(
            [
                (admission, usage.total_tokens)
                for usage, admission in settle
                if admission is not None
            ]
        )
        _unjournal_refused([usage for usage, admission in settle if admission is None])
        return len(batch)


_writer: UsageWriter | None = None
_direct = DirectWriter()


def usage_writer() -> UsageWriter | None:
    """The process's batch writer when settings.USAGE_WRITE_BATCHED, else None (write now)."""
    global _writer
    if not settings.USAGE_WRITE_BATCHED:
        return None
    if _writer is None:
        _writer = UsageWriter()
    return _writer


def writes_at_once(writer: RecordWriter) -> bool:
    """True for the writer that writes in the request (nothing waits in memory)."""
    return writer is _direct


def record_writer(admission=None) -> RecordWriter:
    """The writer for this record. An admission made while Redis was down (fail-open) has no
    journal to fall back on, so its record is written at once."""
    batched = usage_writer()
    if batched is not None and (admission is None or admission.ticket is not None):
        return batched
    return _direct
