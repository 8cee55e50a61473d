"""Celery tasks for notifications: thin, safe to run twice or at once (the unique constraint
and the delivery claim make a second run a no-op)."""

from __future__ import annotations

import logging

from celery import shared_task

from notifications import services

log = logging.getLogger(__name__)


@shared_task(
    name="notifications.tasks.detect", ignore_result=True, soft_time_limit=50, time_limit=58
)
def detect() -> dict:
    """Beat, every minute: quota crossings, expiring keys, first calls."""
    result = services.notifications_detect()
    log.info(
        "notifications detected",
        extra={
            "orgs_read": result.orgs_read,
            "quota": result.quota,
            "expiring": result.expiring,
            "first_calls": result.first_calls,
            "seconds": round(result.seconds, 3),
        },
    )
    return {"quota": result.quota, "expiring": result.expiring, "first_calls": result.first_calls}


@shared_task(
    name="notifications.tasks.send_notification_emails",
    ignore_result=True,
    soft_time_limit=110,
    time_limit=120,
)
def send_notification_emails(notification_id: int) -> int:
    return services.notification_emails_send(notification_id=notification_id)


@shared_task(
    name="notifications.tasks.deliver_webhook",
    ignore_result=True,
    soft_time_limit=50,
    time_limit=60,
)
def deliver_webhook(delivery_id: int) -> str:
    return services.webhook_deliver(delivery_id=delivery_id)


@shared_task(
    name="notifications.tasks.retry_webhooks", ignore_result=True, soft_time_limit=50, time_limit=60
)
def retry_webhooks() -> int:
    """Beat, every minute: enqueue the deliveries whose next attempt is due."""
    due = services.webhook_deliveries_due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)
