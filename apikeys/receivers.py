"""Whatever changes or deletes a key or its owner (pages, admin, shell) rewrites the cached
entry after commit, so the next request in every process sees it."""

from django.conf import settings
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from accounts.models import Organization
from accounts.signals import member_removed, orgs_changed, users_bulk_changed
from apikeys.models import ApiKey
from apikeys.services import (
    apikey_refresh_cache,
    apikeys_refresh_cache_for_org,
    apikeys_refresh_cache_for_owner,
    apikeys_revoke_for_member,
)


@receiver(post_save, sender=ApiKey)
def _key_saved(sender, instance: ApiKey, **kwargs):
    public_id = instance.public_id
    transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))


@receiver(post_delete, sender=ApiKey)
def _key_deleted(sender, instance: ApiKey, **kwargs):
    # Covers the ORM's every path: a queryset delete, and the cascade from deleting the owner
    # (a receiver here also stops Django from fast-deleting keys without signals). The
    # refresh finds no row and writes the "missing" entry.
    public_id = instance.public_id
    transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))


@receiver(m2m_changed, sender=ApiKey.allowed_models.through)
def _key_models_changed(sender, instance, action, **kwargs):
    if action.startswith("post_") and isinstance(instance, ApiKey):
        public_id = instance.public_id
        transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))


# The creator's fields a key's entry carries; a save touching none of them (a login writes
# last_login, a password change the hash) needs no refresh.
_OWNER_FIELDS_IN_ENTRY = frozenset({"email", "is_active"})
_ORG_FIELDS_IN_ENTRY = frozenset({"plan", "plan_id", "suspended_at"})


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _owner_saved(sender, instance, created: bool, update_fields=None, **kwargs):
    if created or (update_fields is not None and not _OWNER_FIELDS_IN_ENTRY & update_fields):
        return
    owner_id = instance.pk
    transaction.on_commit(lambda: apikeys_refresh_cache_for_owner(owner_id=owner_id))


@receiver(users_bulk_changed)
def _owners_bulk_changed(sender, user_ids, **kwargs):
    for owner_id in user_ids:
        apikeys_refresh_cache_for_owner(owner_id=owner_id)


@receiver(post_save, sender=Organization)
def _org_saved(sender, instance, created: bool, update_fields=None, **kwargs):
    if created or (update_fields is not None and not _ORG_FIELDS_IN_ENTRY & update_fields):
        return
    org_id = instance.pk
    transaction.on_commit(lambda: apikeys_refresh_cache_for_org(org_id=org_id))


@receiver(orgs_changed)
def _orgs_changed(sender, org_ids, **kwargs):
    for org_id in org_ids:
        apikeys_refresh_cache_for_org(org_id=org_id)


@receiver(member_removed)
def _member_removed(sender, org_id, user_id, actor=None, **kwargs):
    # In the removal's transaction: it commits with the keys revoked, or not at all.
    apikeys_revoke_for_member(org_id=org_id, user_id=user_id, actor=actor)
