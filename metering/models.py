"""Usage: one record per authenticated API request (the source of truth) and daily ledgers."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class UsageRecord(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok", "ok"
        CLIENT_ERROR = "client_error", "client error"
        RATE_LIMITED = "rate_limited", "rejected by a limit"
        UPSTREAM_ERROR = "upstream_error", "upstream error"
        TIMEOUT = "timeout", "timeout"
        CANCELLED = "cancelled", "cancelled by the client"

    class Endpoint(models.TextChoices):
        CHAT_COMPLETIONS = "chat.completions", "chat completions"
        COMPLETIONS = "completions", "completions (legacy)"
        MESSAGES = "messages", "messages (Anthropic)"

    # Unique together with created_at (below): on PostgreSQL the table is partitioned by month
    # on created_at, and a unique index must hold the partition key. Every writer uses the
    # admission's timestamp, so the same request's record is the same key whoever writes it.
    request_id = models.CharField(max_length=64)
    # The organization that owns the key (billed); `user` is the member who created the key.
    # Null only for records older than organizations whose key and user were both gone.
    org = models.ForeignKey(
        "accounts.Organization",
        null=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    # DO_NOTHING: the organization's usage outlives a member's account.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    key = models.ForeignKey(
        "apikeys.ApiKey", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    model = models.CharField(max_length=128, blank=True)
    pool = models.CharField(max_length=64, blank=True)
    router_id = models.BigIntegerField(null=True, blank=True)
    endpoint = models.CharField(max_length=32, choices=Endpoint.choices)
    streamed = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    http_status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    # 64-bit: a router may report any count; one out of range must not fail a batch insert.
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # The counts are the portal's estimate or were clamped, not what the router reported.
    estimated = models.BooleanField(default=False)
    # Passed the limits (a slot, a reservation): what the limit counters count. A request
    # refused before (bad input, unknown model, a limit) has a record but was never admitted.
    admitted = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    # The API's `user` parameter: the caller's own id for its end user (OpenAI's abuse
    # monitoring field), shown in the request log. Not the portal user: that is `user` above.
    # Nullable without a default: SQLite adds the column in place (a remade table would lose
    # the UsagePending trigger), PostgreSQL without rewriting the table.
    end_user = models.CharField(max_length=256, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="usage_user_recent"),
            models.Index(fields=["org", "-created_at"], name="usage_org_recent"),
            # The request log's filters (metering.selectors.request_log_queryset): each one
            # an index that starts with it and ends in created_at, so a filtered page is a
            # range scan in the order it is shown.
            models.Index(fields=["key", "-created_at"], name="usage_log_key"),
            models.Index(fields=["org", "model", "-created_at"], name="usage_log_model"),
            models.Index(fields=["org", "outcome", "-created_at"], name="usage_log_outcome"),
            models.Index(
                models.F("org"),
                models.F("http_status") / 100,
                models.F("created_at").desc(),
                name="usage_log_status",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["request_id", "created_at"], name="usage_request_once")
        ]

    def __str__(self) -> str:
        return self.request_id

    def save(self, *args, **kwargs):
        if self.org_id is None and self.key_id is not None:
            # Written by hand (the shell, a fixture) without one: the key's organization. The
            # request path always sets it, so this costs it no query.
            self.org_id = (
                type(self.key)
                .objects.filter(pk=self.key_id)
                .values_list("org_id", flat=True)
                .first()
            )
        super().save(*args, **kwargs)

    @property
    def public_error_code(self) -> str:
        """The code the caller got: a refusal's record adds the limit that bound after a colon
        (`rate_limit_exceeded:p_rpm`, for staff insights), which is not the caller's business."""
        return self.error_code.partition(":")[0]


class QuarantinedUsage(models.Model):
    """A usage record the database refused (a value out of range, a broken constraint), kept
    as it came with the error, so that it blocks no record behind it and an operator can see it
    (admin, `portal_usage_quarantined_total`) and replay it once fixed."""

    request_id = models.CharField(max_length=64, db_index=True)
    raw = models.TextField(help_text="The record as JSON, as the writer had it.")
    error = models.TextField()
    source = models.CharField(max_length=16, help_text="writer, direct, spool or journal")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "quarantined usage"

    def __str__(self) -> str:
        return self.request_id


class UsagePending(models.Model):
    """The ids of records not folded into DailyUsage yet.

    A database trigger adds a row for every UsageRecord inserted (in the same transaction, so
    no record can miss it), and the statement that folds a record into its ledger deletes its
    row. Deleting narrow rows is ~2.5x cheaper than flagging the wide, four-times-indexed
    record rows, and unlike an id cursor it cannot skip a record whose id committed late.
    """

    record_id = models.BigIntegerField(primary_key=True)

    class Meta:
        verbose_name_plural = "usage pending aggregation"

    def __str__(self) -> str:
        return str(self.record_id)


class DailyUsage(models.Model):
    """Derived from UsageRecord by metering.services.usage_aggregate; never edited by hand."""

    day = models.DateField()
    org = models.ForeignKey(
        "accounts.Organization",
        null=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    # DO_NOTHING: the organization's usage outlives a member's account.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    key = models.ForeignKey(
        "apikeys.ApiKey", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    model = models.CharField(max_length=128)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # How many of `requests` had their tokens estimated (or clamped) rather than as reported.
    estimated = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day"]
        verbose_name_plural = "daily usage"
        indexes = [models.Index(fields=["org", "day"], name="daily_usage_org_day")]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user", "key", "model"], name="daily_usage_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} user {self.user_id} key {self.key_id} {self.model}"
