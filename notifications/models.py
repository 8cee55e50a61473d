"""Notifications: what happened to an organization (a quota crossed, a key expiring or
revoked, a member in or out, a key's first call), who was told, and webhook deliveries.

A Notification is the event itself, recorded once: a unique constraint over (organization,
event, subject, metric, threshold, period) makes a second detector run, or two at once, a
no-op. Every recipient gets an InboxItem (the portal's list, with its read state); mail and
webhook deliveries follow after commit."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


class Event(models.TextChoices):
    QUOTA = "quota.threshold", "quota threshold crossed"
    KEY_EXPIRING = "key.expiring", "key expiring"
    KEY_REVOKED = "key.revoked", "key revoked by someone else"
    KEY_ROTATED = "key.rotated", "key rotated by someone else"
    MEMBER_INVITED = "member.invited", "member invited"
    MEMBER_JOINED = "member.joined", "member joined"
    MEMBER_REMOVED = "member.removed", "member removed"
    KEY_LIVE = "key.first_call", "first successful call"


class SubjectKind(models.TextChoices):
    ORG = "org", "organization"
    KEY = "key", "API key"
    USER = "user", "user"
    INVITATION = "invitation", "invitation"
    MEMBERSHIP = "membership", "membership"


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(12)}"


class Notification(models.Model):
    event_id = models.CharField(max_length=40, unique=True, default=new_event_id, editable=False)
    org = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=32, choices=Event.choices)
    # What the event is about, generically: (kind, id). Quotas: the organization's plan today,
    # key budgets plug in as (key, id) with their own metric.
    subject_kind = models.CharField(max_length=16, choices=SubjectKind.choices)
    subject_id = models.BigIntegerField()
    metric = models.CharField(max_length=32, blank=True, help_text="requests_per_day, ...")
    threshold = models.PositiveSmallIntegerField(default=0, help_text="Percent, or days left.")
    period = models.CharField(
        max_length=40, blank=True, help_text="d20261127, m202611, an expiry, a moment."
    )
    title = models.CharField(max_length=200)
    data = models.JSONField(default=dict, blank=True)
    # False: recorded so it is never sent later, but a higher threshold crossed in the same run
    # was sent instead (0 → 100 % in one minute is one message, not three).
    delivered = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "org",
                    "event",
                    "subject_kind",
                    "subject_id",
                    "metric",
                    "threshold",
                    "period",
                ],
                name="notification_once",
            )
        ]
        indexes = [
            models.Index(fields=["event", "period"], name="notification_event_period"),
            models.Index(fields=["subject_kind", "subject_id"], name="notification_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.event}"


class InboxItem(models.Model):
    """One recipient's copy in the portal's list; kept whatever their email preferences."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_items"
    )
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="items")
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["user", "notification"], name="inbox_once"),
        ]
        indexes = [
            # The navigation's unread count: an index-only count of a user's unread rows.
            models.Index(fields=["user"], name="inbox_unread", condition=Q(read_at__isnull=True)),
            models.Index(fields=["user", "-created_at"], name="inbox_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.notification_id} to {self.user_id}"


class EmailPreference(models.Model):
    """Which events a user does not want by email (the portal's list always keeps them)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_prefs"
    )
    muted = models.JSONField(default=list, blank=True, help_text="Event types not mailed.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"email preferences of {self.user_id}"


DEFAULT_THRESHOLDS = [80, 100]
THRESHOLD_CHOICES = [50, 80, 100]


class OrgNotificationSettings(models.Model):
    org = models.OneToOneField(
        "accounts.Organization", on_delete=models.CASCADE, related_name="notification_settings"
    )
    thresholds = models.JSONField(default=list, help_text="Quota percentages that notify.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"thresholds of {self.org_id}"


def new_webhook_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


class WebhookEndpoint(models.Model):
    org = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    # Signing needs the secret itself (as Stripe's do); it is shown once, at creation and at
    # each rotation, and never again.
    secret = models.CharField(max_length=80, default=new_webhook_secret, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.url

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    notification = models.ForeignKey(
        Notification, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    event_id = models.CharField(max_length=40, db_index=True)
    event = models.CharField(max_length=32)
    body = models.TextField(help_text="The exact JSON sent (what the signature covers).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"
