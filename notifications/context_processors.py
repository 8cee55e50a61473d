import functools

from notifications.services import unread_count


def notifications(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Lazy: asked only by templates that show the bell (base.html); from the cache, else
    # one indexed count.
    return {"NOTIFICATIONS_UNREAD": functools.partial(unread_count, user_id=user.pk)}
