"""Whatever changes a key or its owner (pages, admin, shell) rewrites the cached entry."""

from django.conf import settings
from django.db import transaction
from django.db.models.signals import m2m_changed, post_save
from django.dispatch import receiver

from apikeys.models import ApiKey
from apikeys.services import apikey_refresh_cache, apikeys_refresh_cache_for_owner


@receiver(post_save, sender=ApiKey)
def _key_saved(sender, instance: ApiKey, **kwargs):
    public_id = instance.public_id
    transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))


@receiver(m2m_changed, sender=ApiKey.allowed_models.through)
def _key_models_changed(sender, instance, action, **kwargs):
    if action.startswith("post_") and isinstance(instance, ApiKey):
        public_id = instance.public_id
        transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _owner_saved(sender, instance, created: bool, **kwargs):
    if not created:
        owner_id = instance.pk
        transaction.on_commit(lambda: apikeys_refresh_cache_for_owner(owner_id=owner_id))
