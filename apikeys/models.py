"""API keys: a public id to recognise them by, a secret shown once, only its HMAC stored."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.selectors import personal_org
from apikeys.keyformat import KEY_PREFIX


class ApiKeyQuerySet(models.QuerySet):
    def for_owner(self, user):
        """The keys `user` created (in any organization)."""
        return self.filter(owner=user)

    def for_org(self, org):
        return self.filter(org=org)

    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    # The organization owns the key (its plan, limits and usage); `owner` is the member who
    # created it: removing that member from the organization revokes it.
    org = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="api_keys"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        verbose_name="created by",
    )
    name = models.CharField(max_length=100)
    public_id = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    # Which APIKEY_HASH_SECRET made secret_hash: lets operators rotate it (see SECURITY.md).
    hash_version = models.CharField(max_length=16, editable=False, default="")
    # Rotation: the secret before the last rotation keeps working until previous_valid_until
    # (the grace), then answers 401. Only one previous secret is kept: rotating again within
    # the grace ends the older one at once.
    previous_secret_hash = models.CharField(max_length=64, editable=False, blank=True, default="")
    previous_hash_version = models.CharField(max_length=16, editable=False, blank=True, default="")
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.ManyToManyField(
        "catalog.CatalogModel",
        blank=True,
        related_name="+",
        help_text="Empty = every model the plan allows.",
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # The key's own budgets per UTC day and month (empty: only the plan's quotas). Counted in
    # the same admission as the plan's, under the key's counters; they can only narrow it.
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_month = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    # The key the portal's playground runs under (its secret was never shown to anyone). A
    # flag, not the name: a user's own key named "Playground" is an ordinary key.
    playground = models.BooleanField(default=False, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    def save(self, *args, **kwargs):
        if self.org_id is None and self.owner_id is not None:
            # No organization named: the creator's personal one, as before organizations.
            self.org = personal_org(self.owner)
        super().save(*args, **kwargs)

    @property
    def display_prefix(self) -> str:
        return f"{KEY_PREFIX}{self.public_id}…"

    @property
    def in_rotation_grace(self) -> bool:
        """The previous secret still works (a rotation's grace has not ended)."""
        return bool(
            self.previous_secret_hash
            and self.previous_valid_until
            and self.previous_valid_until > timezone.now()
        )

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiKeyEvent(models.Model):
    """The audit trail: who created or revoked which key, when, from where."""

    class Kind(models.TextChoices):
        CREATED = "created", "created"
        REVOKED = "revoked", "revoked"
        UPDATED = "updated", "updated"
        ROTATED = "rotated", "rotated"

    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(
        max_length=200, blank=True, help_text="Who, when not a user (the admin, a command)."
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    # What changed: {field: [before, after]} for an update; a rotation's grace for a rotation.
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.key_id} {self.kind}"

    @property
    def change_lines(self) -> list[tuple[str, object, object]]:
        """(field, before, after) of an update, for the pages and the admin."""
        if self.kind != self.Kind.UPDATED:
            return []
        return [
            (name, pair[0], pair[1])
            for name, pair in sorted(self.changes.items())
            if isinstance(pair, list | tuple) and len(pair) == 2
        ]
