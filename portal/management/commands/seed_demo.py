"""Demo data for `make run`: plans, a pool on the router simulator, two models, a demo user
and a staff user, and a fresh demo API key. Safe to run again: it converges to the same state
(the previous demo key is revoked, since a secret cannot be shown twice).

It is for development: it makes a demo plan the default, adds a router at a local address and
creates a superuser. With DEBUG off it refuses unless given `--allow-production`; then the
passwords in this file are never used: they come from SEED_ADMIN_PASSWORD and
SEED_DEMO_PASSWORD, or are generated and printed once.
"""

import os
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Plan, User
from apikeys.models import ApiKey
from apikeys.services import apikey_create, apikey_revoke
from catalog.services import catalog_apply_config

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password-2026"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-2026"
DEMO_KEY_NAME = "demo key (make run)"


def demo_config(router_url: str) -> dict:
    return {
        "plans": [
            {
                "name": "free",
                "requests_per_minute": 60,
                "tokens_per_minute": 100_000,
                "requests_per_day": 1000,
                "tokens_per_day": 500_000,
                "requests_per_month": None,
                "tokens_per_month": None,
                "max_concurrent_requests": 8,
                "models": ["*"],
                "default": True,
                "description": "For trying things out.",
            },
            {
                "name": "pro",
                "requests_per_minute": 600,
                "tokens_per_minute": 1_000_000,
                "requests_per_day": None,
                "tokens_per_day": None,
                "requests_per_month": None,
                "tokens_per_month": 100_000_000,
                "max_concurrent_requests": 64,
                "models": ["*"],
                "description": "For production traffic.",
            },
        ],
        "pools": [
            {
                "name": "default",
                "description": "Local router simulator",
                "routers": [
                    {
                        "url": router_url,
                        "api_version": "v1",
                        "session_id": 1,
                        "token": "default-dev-token",
                        "weight": 1,
                        "name": "sim-1",
                    }
                ],
            }
        ],
        "models": [
            {
                "id": "cortensor/llama-3.1-8b",
                "pool": "default",
                "chat_template": "llama3",
                "display_name": "Llama 3.1 8B Instruct",
                "max_tokens": 1024,
                "context_length": 8192,
                "sort_order": 1,
                "description": "Meta's Llama 3.1 8B Instruct served by Cortensor miners. "
                "Fast, general-purpose chat.",
            },
            {
                "id": "cortensor/qwen-2.5-7b",
                "pool": "default",
                "chat_template": "chatml",
                "display_name": "Qwen 2.5 7B Instruct",
                "max_tokens": 1024,
                "context_length": 32768,
                "sort_order": 2,
                "description": "Alibaba's Qwen 2.5 7B Instruct: long context, multilingual.",
            },
        ],
    }


class Command(BaseCommand):
    help = "Create (or refresh) the demo catalog, users and API key for `make run`."

    def add_arguments(self, parser):
        parser.add_argument("--router-url", default="http://127.0.0.1:5010")
        parser.add_argument("--quiet", action="store_true", help="print only the API key")
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="run with DEBUG off (a demo on a production-shaped install); passwords "
            "then come from SEED_ADMIN_PASSWORD / SEED_DEMO_PASSWORD or are generated",
        )

    @transaction.atomic
    def handle(self, *args, router_url: str, quiet: bool, allow_production: bool, **options):
        if not settings.DEBUG and not allow_production:
            raise CommandError(
                "seed_demo is for development: DEBUG is off. It would create a superuser, make "
                "a demo plan the default and add a demo router. Use --allow-production if you "
                "really want demo data here."
            )
        demo_password, admin_password = DEMO_PASSWORD, ADMIN_PASSWORD
        if not settings.DEBUG:
            demo_password = _production_password("SEED_DEMO_PASSWORD")
            admin_password = _production_password("SEED_ADMIN_PASSWORD")
        catalog_apply_config(config=demo_config(router_url.rstrip("/")))
        free = Plan.objects.get(name="free")
        demo, demo_new = self._user(DEMO_EMAIL, demo_password, plan=free, staff=False)
        _, admin_new = self._user(
            ADMIN_EMAIL, admin_password, plan=Plan.objects.get(name="pro"), staff=True
        )
        for old in ApiKey.objects.filter(owner=demo, name=DEMO_KEY_NAME, revoked_at__isnull=True):
            apikey_revoke(key=old, actor_label="manage.py seed_demo")
        _, raw = apikey_create(owner=demo, name=DEMO_KEY_NAME, actor_label="manage.py seed_demo")
        if quiet:
            self.stdout.write(raw)
            return
        base = settings.PORTAL_BASE_URL
        demo_login = f"{DEMO_EMAIL} / {demo_password if demo_new else '(password unchanged)'}"
        admin_login = f"{ADMIN_EMAIL} / {admin_password if admin_new else '(password unchanged)'}"
        mfa = ""
        if settings.STAFF_REQUIRE_MFA:
            mfa = (
                "\n  MFA         staff must set up an authenticator app at their first admin "
                "visit (STAFF_REQUIRE_MFA)"
            )
        self.stdout.write(
            self.style.SUCCESS("Demo data ready.")
            + f"""

  Portal      {base}/
  Log in      {demo_login}
  Admin       {base}/admin/  ({admin_login}){mfa}
  API key     {raw}

  Try it:
  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {raw}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "cortensor/llama-3.1-8b", "messages": [{{"role": "user", "content": "Hi"}}]}}'
"""
        )

    def _user(self, email: str, password: str, *, plan: Plan, staff: bool) -> tuple[User, bool]:
        """The user, made if missing (an existing user's password is left alone); and
        whether it was made."""
        from allauth.account.models import EmailAddress

        user = User.objects.filter(email=email).first()
        created = user is None
        if created:
            user = User.objects.create_user(
                email=email, password=password, plan=plan, is_staff=staff, is_superuser=staff
            )
        EmailAddress.objects.update_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        return user, created


def _production_password(variable: str) -> str:
    """The password from the environment, or a fresh random one (printed once by the
    command): never the development password that is in this file."""
    return os.environ.get(variable) or secrets.token_urlsafe(18)
