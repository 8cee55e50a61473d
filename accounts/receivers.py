"""Every user has a personal organization from the moment they exist, however they were made
(sign-up, createsuperuser, the admin, a command, the shell)."""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.services import org_create_personal


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _user_created(sender, instance, created: bool, raw: bool = False, **kwargs):
    if created and not raw:
        org_create_personal(user=instance, plan=getattr(instance, "_personal_plan", None))
