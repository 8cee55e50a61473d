"""What the status page and staff insights read: compact history that Celery builds from the
router probes and the usage records, and the incidents staff write.

Nothing here is written on the /v1/ request path. `ops.services.health_rollup` (beat, every
minute) turns the probe state and the last minutes of usage records into one ModelHealth row per
model per 5 minutes and keeps each model's ModelDay current; `ops.insights.insights_build` folds
a day of records into the small daily aggregates the insights page reads.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class State(models.TextChoices):
    OPERATIONAL = "operational", "operational"
    DEGRADED = "degraded", "degraded"
    DOWN = "down", "down"


class ModelHealth(models.Model):
    """One model's health over one 5-minute bucket. Public model ids only: never a router,
    pool or session (the status page reads these rows and nothing else)."""

    model = models.CharField(max_length=128)
    bucket = models.DateTimeField(help_text="Start of the 5-minute bucket (UTC).")
    state = models.CharField(max_length=12, choices=State.choices)
    # Requests that reached routing in the bucket (refusals and bad input are not about health).
    requests = models.PositiveIntegerField(default=0)
    upstream_errors = models.PositiveIntegerField(default=0)
    timeouts = models.PositiveIntegerField(default=0)
    ttfb_p50_ms = models.PositiveIntegerField(null=True, blank=True)
    routers = models.PositiveSmallIntegerField(default=0, help_text="Enabled, not draining.")
    routers_up = models.PositiveSmallIntegerField(default=0, help_text="Of those, not unhealthy.")
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-bucket"]
        verbose_name_plural = "model health (5 minutes)"
        constraints = [
            models.UniqueConstraint(fields=["model", "bucket"], name="model_health_unique"),
        ]
        indexes = [models.Index(fields=["bucket"], name="model_health_bucket")]

    def __str__(self) -> str:
        return f"{self.model} {self.bucket:%Y-%m-%d %H:%M} {self.state}"


class ModelDay(models.Model):
    """A model's day: how many 5-minute buckets it was degraded or down (the 90-day bar)."""

    model = models.CharField(max_length=128)
    day = models.DateField()
    buckets = models.PositiveSmallIntegerField(default=0)
    degraded = models.PositiveSmallIntegerField(default=0)
    down = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["model", "day"], name="model_day_unique")]

    def __str__(self) -> str:
        return f"{self.model} {self.day}"

    @property
    def availability(self) -> float | None:
        """Share of the day's buckets the model was not down (degraded still serves)."""
        return None if not self.buckets else (self.buckets - self.down) / self.buckets


class Incident(models.Model):
    class Status(models.TextChoices):
        INVESTIGATING = "investigating", "investigating"
        IDENTIFIED = "identified", "identified"
        MONITORING = "monitoring", "monitoring"
        RESOLVED = "resolved", "resolved"

    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.INVESTIGATING)
    affected_models = models.ManyToManyField(
        "catalog.CatalogModel", blank=True, related_name="incidents"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status != self.Status.RESOLVED


class IncidentUpdate(models.Model):
    """A timestamped note on an incident, in the status it moved the incident to."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="updates")
    status = models.CharField(max_length=16, choices=Incident.Status.choices)
    message = models.TextField()
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.incident_id} {self.status} {self.created_at:%Y-%m-%d %H:%M}"


# --- staff insights: small daily aggregates, built by Celery from the records -----------------


class InsightModelDay(models.Model):
    """A model's day of traffic: counts by outcome, tokens and latency percentiles."""

    day = models.DateField()
    model = models.CharField(max_length=128)
    requests = models.PositiveBigIntegerField(default=0)
    ok = models.PositiveBigIntegerField(default=0)
    upstream_errors = models.PositiveBigIntegerField(default=0)
    timeouts = models.PositiveBigIntegerField(default=0)
    client_errors = models.PositiveBigIntegerField(default=0)
    cancelled = models.PositiveBigIntegerField(default=0)
    refused = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    latency_p50_ms = models.PositiveIntegerField(null=True)
    latency_p95_ms = models.PositiveIntegerField(null=True)
    ttfb_p50_ms = models.PositiveIntegerField(null=True)
    ttfb_p95_ms = models.PositiveIntegerField(null=True)

    class Meta:
        ordering = ["day", "model"]
        constraints = [
            models.UniqueConstraint(fields=["day", "model"], name="insight_model_day_unique")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model}"


class InsightDay(models.Model):
    """A day across the product: active customers and keys, refusals by the limit that bound."""

    day = models.DateField(unique=True)
    active_customers = models.PositiveIntegerField(default=0)
    active_keys = models.PositiveIntegerField(default=0)
    # {limit name: count}, e.g. {"p_rpm": 12, "tpd": 3} (metering.limits.base names).
    refusals = models.JSONField(default=dict)

    class Meta:
        ordering = ["day"]

    def __str__(self) -> str:
        return str(self.day)
