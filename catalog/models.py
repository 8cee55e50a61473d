"""The catalog: public models, the router pools that serve them, and the routers in a pool."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from accounts.models import Plan
from catalog.routerurl import router_url_problem


class RouterPool(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Router(models.Model):
    class ApiVersion(models.TextChoices):
        V1 = "v1", "v1"
        V3 = "v3", "v3"

    class Health(models.TextChoices):
        HEALTHY = "healthy", "healthy"
        COOLING_DOWN = "cooling_down", "cooling down"
        UNHEALTHY = "unhealthy", "unhealthy"

    pool = models.ForeignKey(RouterPool, on_delete=models.CASCADE, related_name="routers")
    name = models.CharField(max_length=64, blank=True)
    base_url = models.URLField(max_length=300)
    api_version = models.CharField(max_length=2, choices=ApiVersion.choices, default=ApiVersion.V1)
    session_id = models.PositiveIntegerField()
    # The router key is an operator secret: write-only in the admin, never shown or logged.
    token = models.CharField(max_length=300, blank=True)
    weight = models.PositiveIntegerField(default=1)
    enabled = models.BooleanField(default=True)
    draining = models.BooleanField(
        default=False, help_text="Finish open requests, take no new ones."
    )
    connect_timeout = models.FloatField(default=3.0, help_text="Seconds to connect.")
    read_timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds between bytes; empty = the model's timeout."
    )
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.HEALTHY)
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pool", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["pool", "base_url", "session_id"], name="router_unique_in_pool"
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.pool.name}#{self.pk}"

    @property
    def traffic_state(self) -> str:
        """One word for what traffic it takes: disabled, draining, or its probe's health."""
        if not self.enabled:
            return "disabled"
        if self.draining:
            return "draining"
        return self.get_health_display()

    def clean(self) -> None:
        super().clean()
        problem = router_url_problem(self.base_url or "")
        if self.base_url and problem:
            raise ValidationError({"base_url": f"Router URL refused: {problem}."})


class CatalogModel(models.Model):
    """A public model id (what customers send as `model`) served by one router pool."""

    class ChatTemplate(models.TextChoices):
        LLAMA3 = "llama3", "Llama 3"
        CHATML = "chatml", "ChatML"
        PLAIN = "plain", "Plain"

    public_id = models.CharField(
        max_length=128,
        unique=True,
        help_text="What customers send as `model`, e.g. cortensor/llama-3.1-8b.",
    )
    display_name = models.CharField(max_length=128, blank=True)
    description = models.TextField(blank=True)
    pool = models.ForeignKey(RouterPool, on_delete=models.PROTECT, related_name="models")
    context_length = models.PositiveIntegerField(default=8192)
    chat_template = models.CharField(
        max_length=16, choices=ChatTemplate.choices, default=ChatTemplate.LLAMA3
    )
    # Empty: a request without max_tokens gets what fits the context after its prompt, up to
    # max_tokens (OpenAI's rule); a number caps that default lower.
    default_max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=None,
        help_text="Empty: whatever fits the context after the prompt, up to max_tokens.",
    )
    max_tokens = models.PositiveIntegerField(default=1024)
    request_timeout = models.PositiveIntegerField(default=120, help_text="Seconds.")
    enabled = models.BooleanField(default=True)
    plans = models.ManyToManyField(
        Plan,
        blank=True,
        related_name="models",
        help_text="Plans without 'all models' that may use it.",
    )
    sort_order = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "public_id"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.public_id
