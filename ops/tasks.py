"""Celery tasks for the status history and the insights aggregates: thin, safe to run twice."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from ops.insights import insights_build
from ops.services import health_prune, health_rollup


@shared_task(name="ops.tasks.roll_up_health", ignore_result=True, soft_time_limit=50, time_limit=60)
def roll_up_health() -> int:
    return health_rollup()


@shared_task(
    name="ops.tasks.build_insights", ignore_result=True, soft_time_limit=500, time_limit=590
)
def build_insights() -> int:
    """Today so far, and yesterday once more (its last records came after its last run)."""
    today = timezone.now().date()
    return insights_build(day=today - timedelta(days=1)) + insights_build(day=today)


@shared_task(name="ops.tasks.prune_health", ignore_result=True, soft_time_limit=300, time_limit=360)
def prune_health() -> int:
    return health_prune()
