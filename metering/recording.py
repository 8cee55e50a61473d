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
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from metering.models import UsageRecord

log = logging.getLogger(__name__)

SPOOL_KEY = "usage:spool"
JOURNAL_KEY = "usage:journal"  # written by metering/limits/admit.lua, cleared by settle.lua
JOURNAL_DUE_KEY = "usage:journal:due"
DRAIN_BATCH = 500


@dataclass(slots=True)
class Usage:
    request_id: str
    user_id: int
    key_id: int
    endpoint: str
    model: str = ""
    pool: str = ""
    router_id: int | None = None
    streamed: bool = False
    outcome: str = UsageRecord.Outcome.OK
    http_status: int = 200
    error_code: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    latency_ms: int = 0
    ttfb_ms: int | None = None
    created_at: datetime = field(default_factory=timezone.now)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def row(self) -> dict:
        values = asdict(self)
        values["total_tokens"] = self.total_tokens
        return values


def usage_record_write(usage: Usage) -> bool:
    """Store the record (or spool it); False if one with this request id exists already."""
    try:
        with transaction.atomic():
            UsageRecord.objects.create(**usage.row())
        return True
    except IntegrityError:
        return False
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


def _spool_dir() -> Path:
    return Path(getattr(settings, "USAGE_SPOOL_DIR", settings.BASE_DIR / "var" / "usage-spool"))


def _spool(usage: Usage) -> None:
    line = json.dumps(usage.row(), default=str)
    from portal.redis import get_redis

    client = get_redis()
    if client is not None:
        try:
            client.rpush(SPOOL_KEY, line)
            return
        except Exception as exc:
            log.warning("usage spool: Redis unavailable too (%s)", exc.__class__.__name__)
    directory = _spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{os.getpid()}.jsonl", "a") as spool:
        spool.write(line + "\n")
        spool.flush()
        os.fsync(spool.fileno())


def _insert(lines: list[str]) -> int:
    """Insert records not already in the table; returns how many were new."""
    rows = {}
    for line in lines:
        data = json.loads(line)
        data["created_at"] = parse_datetime(data["created_at"])
        rows[data["request_id"]] = UsageRecord(**data)
    with transaction.atomic():
        existing = set(
            UsageRecord.objects.filter(request_id__in=list(rows)).values_list(
                "request_id", flat=True
            )
        )
        new = [row for rid, row in rows.items() if rid not in existing]
        UsageRecord.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)


def usage_spool_drain() -> int:
    """Move spooled records into the table (safe to run anywhere, twice, or at once)."""
    moved = 0
    from portal.redis import get_redis

    client = get_redis()
    if client is not None:
        while True:
            # Peek, insert, then trim: a crash between the two re-inserts (ignored as a
            # duplicate) rather than losing the batch.
            lines = [b.decode() for b in client.lrange(SPOOL_KEY, 0, DRAIN_BATCH - 1)]
            if not lines:
                break
            moved += _insert(lines)
            client.ltrim(SPOOL_KEY, len(lines), -1)
    directory = _spool_dir()
    if directory.is_dir():
        for path in sorted(directory.glob("*.jsonl")):
            claimed = path.with_suffix(f".draining-{os.getpid()}")
            try:
                path.rename(claimed)  # atomic: one drainer per file
            except FileNotFoundError:
                continue
            lines = [line for line in claimed.read_text().splitlines() if line.strip()]
            for start in range(0, len(lines), DRAIN_BATCH):
                moved += _insert(lines[start : start + DRAIN_BATCH])
            claimed.unlink()
    if moved:
        log.info("usage spool drained", extra={"records": moved})
    return moved


def journal_entry(usage: Usage, *, prompt_tokens: int) -> str:
    """The record to write if the process serving this request dies before it ends (SIGKILL,
    OOM): admission stores it in Redis, settling removes it, and `usage_journal_reconcile`
    writes the ones whose lease ran out. The tokens are the prompt estimate; what was streamed
    before the process died is unknown."""
    row = usage.row()
    row.update(
        outcome=UsageRecord.Outcome.CANCELLED,
        http_status=499,
        error_code="request_lost",
        tokens_estimated=True,
        prompt_tokens=prompt_tokens,
        completion_tokens=0,
        total_tokens=prompt_tokens,
    )
    return json.dumps(row, default=str)


def usage_journal_reconcile() -> int:
    """Write a record for every admitted request whose process died before settling."""
    from portal.redis import get_redis

    client = get_redis()
    if client is None:
        return 0
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    written = 0
    while True:
        members = client.zrangebyscore(JOURNAL_DUE_KEY, "-inf", now_ms, start=0, num=DRAIN_BATCH)
        if not members:
            break
        lines = [line.decode() for line in client.hmget(JOURNAL_KEY, members) if line]
        if lines:
            written += _insert(lines)  # a record the request wrote itself wins (same id)
        pipe = client.pipeline(transaction=False)
        pipe.hdel(JOURNAL_KEY, *members)
        pipe.zrem(JOURNAL_DUE_KEY, *members)
        pipe.execute()
    if written:
        log.warning("usage journal: wrote %d records of requests whose process died", written)
    return written


class UsageWriter:
    """Writes usage records off the request greenlets, in batches (production, with Redis).

    A request that ends hands its record and its limits admission here. Every FLUSH_SECONDS
    the writer inserts the batch in one statement, then settles the batch's admissions in one
    Redis pipeline. Settling is what removes a request's admission journal entry (see
    `journal_entry`), so until its record is in the table a request stays recoverable: if
    this process dies with records queued, `usage_journal_reconcile` writes them (with the
    admission's estimate) once their lease runs out. Nothing queued is only in memory.

    Per request this replaces a transaction (BEGIN, INSERT, COMMIT and a WAL flush) and a
    Redis round trip with a share of one batched INSERT and one pipelined round trip.
    """

    FLUSH_SECONDS = 0.05
    MAX_BATCH = 500

    def __init__(self) -> None:
        import threading
        from collections import deque

        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._threading = threading

    def submit(self, usage: Usage, admission) -> None:
        self._queue.append((usage, admission))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    import atexit

                    self._thread = self._threading.Thread(
                        target=self._run, daemon=True, name="usage-writer"
                    )
                    self._thread.start()
                    atexit.register(self.flush)

    def _run(self) -> None:
        import time

        while True:
            time.sleep(self.FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:
                log.exception("usage writer: flush failed")

    def flush(self) -> int:
        """Write and settle everything queued now (also called at worker exit)."""
        from metering.limits import limits_settle_many
        from portal.db import release_connection

        written = 0
        with self._lock:  # one flusher at a time: the loop, or an exit hook
            while self._queue:
                batch = []
                while self._queue and len(batch) < self.MAX_BATCH:
                    batch.append(self._queue.popleft())
                rows = [UsageRecord(**usage.row()) for usage, _ in batch]
                try:
                    UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
                except DatabaseError as exc:
                    log.warning(
                        "usage writer: database unavailable (%s), spooling %d records",
                        exc.__class__.__name__,
                        len(batch),
                    )
                    for usage, _ in batch:
                        _spool(usage)
                finally:
                    release_connection()
                limits_settle_many(
                    [
                        (admission, usage.total_tokens)
                        for usage, admission in batch
                        if admission is not None
                    ]
                )
                written += len(batch)
        return written


_writer: UsageWriter | None = None


def usage_writer() -> UsageWriter | None:
    """The process's batch writer when settings.USAGE_WRITE_BATCHED, else None (write now)."""
    global _writer
    if not settings.USAGE_WRITE_BATCHED:
        return None
    if _writer is None:
        _writer = UsageWriter()
    return _writer
