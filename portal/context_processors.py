import functools

from django.conf import settings

from accounts.selectors import current_membership
from accounts.views import switcher_memberships
from ops.selectors import open_incidents_cached
from portal.devmail import mailbox_visible


def portal(request):
    return {
        "PORTAL_BASE_URL": settings.PORTAL_BASE_URL,
        "API_BASE_URL": settings.PORTAL_BASE_URL + "/v1",
        "DEV_MAILBOX": mailbox_visible(getattr(request, "user", None)),
        # Callables: the template asks only on pages that show them (a query each).
        "ORG_SWITCHER": functools.partial(switcher_memberships, request),
        "CURRENT_MEMBERSHIP": functools.partial(_current, request),
        # Lazy: only pages that render the banner (base.html) read it, from a 15 s cache.
        "OPEN_INCIDENTS": open_incidents_cached,
    }


def _current(request):
    return current_membership(request) if hasattr(request, "session") else None
