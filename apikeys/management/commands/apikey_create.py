"""`manage.py apikey_create --email E --name N [--plan P] [--create-user]`

Prints only the new key on stdout, so scripts can capture it:
    KEY=$(python manage.py apikey_create --email ops@example.com --name ci)
Everything else (what was done, errors) goes to stderr.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Plan
from apikeys.services import apikey_create
from core.errors import ApiError

ACTOR_LABEL = "manage.py apikey_create"


class Command(BaseCommand):
    help = "Create an API key for a user and print only the key on stdout."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True, help="The key owner's email address.")
        parser.add_argument("--name", required=True, help="A name to recognise the key by.")
        parser.add_argument("--plan", help="Put the user on this plan (by name).")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the user (verified email, no password) if missing.",
        )

    def handle(self, *args, email: str, name: str, plan: str | None, create_user: bool, **options):
        email = email.strip().lower()
        if not email or "@" not in email:
            raise CommandError(f"--email {email!r} is not an email address.")
        plan_obj = None
        if plan:
            plan_obj = Plan.objects.filter(name=plan).first()
            if plan_obj is None:
                known = ", ".join(Plan.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"No plan named {plan!r} (plans: {known}).")
        with transaction.atomic():
            user = self._user(email, create_user=create_user, plan=plan_obj)
            if plan_obj is not None and user.plan_id != plan_obj.pk:
                user.plan = plan_obj
                user.save(update_fields=["plan"])
                self.stderr.write(f"{email} is now on plan {plan_obj.name}.")
            try:
                key, secret = apikey_create(owner=user, name=name, actor_label=ACTOR_LABEL)
            except ApiError as exc:
                raise CommandError(exc.message) from None
        self.stderr.write(f"Created key {key.display_prefix} ({key.name!r}) for {email}.")
        self.stdout.write(secret)

    def _user(self, email: str, *, create_user: bool, plan: Plan | None):
        user_model = get_user_model()
        user = user_model.objects.filter(email__iexact=email).first()
        if user is not None:
            return user
        if not create_user:
            raise CommandError(f"No user with email {email}; pass --create-user to create one.")
        from allauth.account.models import EmailAddress

        user = user_model.objects.create_user(
            email=email, password=None, plan=plan or Plan.objects.default()
        )
        EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
        self.stderr.write(
            f"Created user {email} (verified email, no password: they can set "
            "one with 'Forgot password')."
        )
        return user
