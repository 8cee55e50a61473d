from django.conf import settings

from ops.selectors import open_incidents_cached
from portal.devmail import mailbox_visible


def portal(request):
    return {
        "PORTAL_BASE_URL": settings.PORTAL_BASE_URL,
        "API_BASE_URL": settings.PORTAL_BASE_URL + "/v1",
        "DEV_MAILBOX": mailbox_visible(getattr(request, "user", None)),
        # Lazy: only pages that render the banner (base.html) read it, from a 15 s cache.
        "OPEN_INCIDENTS": open_incidents_cached,
    }
