"""Every staff action on record: who, when, what, on which object, before and after.

Sits just above core so that every app can record its staff actions (accounts' plan changes and
suspensions, the catalog's router and pool changes and apply_config, apikeys' revocations).
Kept for good: the admin lists them read-only and nothing prunes them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class StaffAction(models.Model):
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(
        max_length=200, blank=True, help_text="Who, when not a user (a management command)."
    )
    action = models.CharField(max_length=64, db_index=True, help_text="e.g. router.drain")
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="staff_action_target")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.who} {self.action} {self.target_label}"

    @property
    def who(self) -> str:
        return self.actor.email if self.actor_id and self.actor else self.actor_label or "-"
