"""Writing usage records: one per authenticated API request, idempotent on the request id.

Called when a request ends, however it ends. Under gevent every greenlet would hold its own
database connection; with psycopg's pool (settings.DATABASES) the write borrows one of at most
DB_POOL_MAX_SIZE connections and gives it back when Django closes it, so the number of
PostgreSQL connections stays bounded whatever the number of open streams.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from metering.models import UsageRecord

log = logging.getLogger(__name__)


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


def usage_record_write(usage: Usage, *, release_connection: bool = False) -> bool:
    """Store the record; False if one with this request id exists already (never a double)."""
    values = asdict(usage)
    values["total_tokens"] = usage.total_tokens
    try:
        with transaction.atomic():
            UsageRecord.objects.create(**values)
        return True
    except IntegrityError:
        return False
    finally:
        if release_connection:
            # Streams end outside Django's request cycle: give the pooled connection back now.
            close_old_connections()
