"""Staff behind MFA: with STAFF_REQUIRE_MFA, a staff user without an authenticator app is sent
to set one up before any admin page. The admin holds router keys, users and API keys; a
password alone should not open it.

The admin's log-in is allauth's (portal/urls.py), so once a staff user has an authenticator,
every later log-in asks for its code: checking that one exists is enough here.
"""

from __future__ import annotations

from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode


class StaffMFAMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.STAFF_REQUIRE_MFA and _needs_mfa_setup(request):
            messages.warning(
                request,
                "Staff need an authenticator app to use the admin: set one up to continue.",
            )
            target = reverse("mfa_activate_totp")
            return HttpResponseRedirect(f"{target}?{urlencode({'next': request.path})}")
        return self.get_response(request)


def _needs_mfa_setup(request) -> bool:
    admin_root = reverse("admin:index")
    if not request.path.startswith(admin_root):
        return False
    if request.path in (reverse("admin:login"), reverse("admin:logout")):
        return False
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    return not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
