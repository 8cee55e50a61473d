"""What notifies without the lower apps knowing: accounts and apikeys send signals or save
rows; this app listens (STYLE 14: the higher layer registers itself). Each receiver runs in the
sender's transaction, so the notification commits with the change or not at all."""

from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import Invitation, Membership
from accounts.signals import member_removed
from apikeys.models import ApiKeyEvent
from apikeys.signals import key_rotated
from notifications.services import (
    notify_key_revoked,
    notify_key_rotated,
    notify_member_invited,
    notify_member_joined,
    notify_member_removed,
)


@receiver(post_save, sender=ApiKeyEvent)
def _key_event(sender, instance: ApiKeyEvent, created: bool, raw: bool = False, **kwargs):
    # apikey_revoke writes a `revoked` event with its actor in the revocation's transaction:
    # every path (the page, the API, the admin, a member's removal) goes through it.
    if created and not raw and instance.kind == ApiKeyEvent.Kind.REVOKED:
        notify_key_revoked(key=instance.key, actor=instance.actor, actor_label=instance.actor_label)


@receiver(key_rotated)
def _key_rotated(sender, key, actor=None, **kwargs):
    # Sent by apikey_rotate after its commit (every path: the page, the API, the command).
    notify_key_rotated(key=key, actor=actor)


@receiver(post_save, sender=Invitation)
def _invited(sender, instance: Invitation, created: bool, raw: bool = False, **kwargs):
    if created and not raw:
        notify_member_invited(invitation=instance)


@receiver(post_save, sender=Membership)
def _joined(sender, instance: Membership, created: bool, raw: bool = False, **kwargs):
    if created and not raw:
        notify_member_joined(membership=instance)


@receiver(member_removed)
def _removed(sender, org_id: int, user_id: int, actor=None, **kwargs):
    notify_member_removed(org_id=org_id, user_id=user_id, actor=actor)
