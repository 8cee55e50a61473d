import functools

from django.conf import settings
from django.core.cache import cache

from notifications.services import notifications_detect, unread_count


def notifications(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Lazy: asked only by templates that show the bell (base.html), from the cache: no query.
    return {"NOTIFICATIONS_UNREAD": functools.partial(_bell, user.pk)}


def _bell(user_id: int) -> int:
    embedded_catch_up()
    return unread_count(user_id=user_id)


def embedded_catch_up() -> None:
    """`make run` (DEBUG, tasks run in-process, no beat): the detector beat would run, at most
    once a minute, when a page shows the bell. Never in production: there beat runs it."""
    if (
        settings.DEBUG
        and settings.CELERY_TASK_ALWAYS_EAGER
        and cache.add("notifications:catch-up", 1, 60)
    ):
        notifications_detect()
