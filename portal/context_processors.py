from django.conf import settings

from portal.devmail import mailbox_visible


def portal(request):
    return {
        "PORTAL_BASE_URL": settings.PORTAL_BASE_URL,
        "API_BASE_URL": settings.PORTAL_BASE_URL + "/v1",
        "DEV_MAILBOX": mailbox_visible(getattr(request, "user", None)),
    }
