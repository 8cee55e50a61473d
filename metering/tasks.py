"""Celery tasks for metering: thin wrappers over services, safe to run twice or at once."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from metering.partitions import usage_partitions_ensure
from metering.recording import usage_journal_reconcile, usage_spool_drain
from metering.services import usage_aggregate, usage_prune

# Beat runs aggregation every minute: a run stops taking new batches after this many seconds
# (the next run continues), so runs do not pile up behind a backlog.
AGGREGATE_BUDGET_SECONDS = 45


@shared_task(
    name="metering.tasks.aggregate_usage", ignore_result=True, soft_time_limit=110, time_limit=120
)
def aggregate_usage() -> int:
    usage_spool_drain()  # records spooled during a database outage are folded in this run
    return usage_aggregate(max_seconds=AGGREGATE_BUDGET_SECONDS)


@shared_task(
    name="metering.tasks.prune_usage", ignore_result=True, soft_time_limit=1700, time_limit=1800
)
def prune_usage() -> int:
    return usage_prune(older_than_days=settings.USAGE_RETENTION_DAYS)


@shared_task(
    name="metering.tasks.drain_usage_spool", ignore_result=True, soft_time_limit=50, time_limit=60
)
def drain_usage_spool() -> int:
    """Records spooled while the database was unavailable go into the table, and requests whose
    process died before they ended get their record from the admission journal."""
    return usage_spool_drain() + usage_journal_reconcile()


@shared_task(
    name="metering.tasks.usage_partitions", ignore_result=True, soft_time_limit=110, time_limit=120
)
def usage_partitions() -> int:
    """The usage table's monthly partitions for this month and the next three (PostgreSQL)."""
    return len(usage_partitions_ensure())
