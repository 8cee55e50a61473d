"""Django's createsuperuser, plus the one thing the new operator must know next: with
STAFF_REQUIRE_MFA the admin first asks them to set up an authenticator app.

(`accounts` is listed before `django.contrib.auth` in INSTALLED_APPS so that this command
wins.)"""

from django.conf import settings
from django.contrib.auth.management.commands.createsuperuser import Command as BaseCommand

MFA_NOTE = (
    "Staff must set up an authenticator app (TOTP) before using the admin "
    "(STAFF_REQUIRE_MFA): log in at /accounts/login/ and follow the prompt."
)


class Command(BaseCommand):
    def handle(self, *args, **options):
        super().handle(*args, **options)
        if settings.STAFF_REQUIRE_MFA and options.get("verbosity", 1) >= 1:
            self.stdout.write(MFA_NOTE)
