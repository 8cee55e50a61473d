"""Celery tasks for metering: thin wrappers over services, safe to run twice or at once."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from metering.services import usage_aggregate, usage_prune

# Beat runs aggregation every minute: a run stops taking new batches after this many seconds
# (the next run continues), so runs do not pile up behind a backlog.
AGGREGATE_BUDGET_SECONDS = 45


@shared_task(
    name="metering.tasks.aggregate_usage", ignore_result=True, soft_time_limit=110, time_limit=120
)
def aggregate_usage() -> int:
    return usage_aggregate(max_seconds=AGGREGATE_BUDGET_SECONDS)


@shared_task(
    name="metering.tasks.prune_usage", ignore_result=True, soft_time_limit=1700, time_limit=1800
)
def prune_usage() -> int:
    return usage_prune(older_than_days=settings.USAGE_RETENTION_DAYS)
