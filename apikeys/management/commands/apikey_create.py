"""`manage.py apikey_create --email E --name N [--org SLUG] [--plan P] [--create-user]`

Prints only the new key on stdout, so scripts can capture it:
    KEY=$(python manage.py apikey_create --email ops@example.com --name ci)
The key belongs to the organization `--org` (the user must be a member), else to the user's
personal organization; `--plan` sets the plan of that organization. Everything else (what was
done, errors) goes to stderr.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.management.commands.org_create import plan_named
from accounts.models import Organization
from accounts.selectors import personal_org
from accounts.services import org_set_plan, user_for_email
from apikeys.services import apikey_create
from core.errors import ApiError

ACTOR_LABEL = "manage.py apikey_create"


class Command(BaseCommand):
    help = "Create an API key for a user and print only the key on stdout."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True, help="The key creator's email address.")
        parser.add_argument("--name", required=True, help="A name to recognise the key by.")
        parser.add_argument(
            "--org", help="The organization's slug (default: the user's personal one)."
        )
        parser.add_argument("--plan", help="Put the key's organization on this plan (by name).")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the user (verified email, no password) if missing.",
        )

    def handle(self, *args, email: str, name: str, org: str | None, plan: str | None, **options):
        email = email.strip().lower()
        if not email or "@" not in email:
            raise CommandError(f"--email {email!r} is not an email address.")
        plan_obj = plan_named(plan)
        try:
            with transaction.atomic():
                user, created = user_for_email(email=email, create=options["create_user"])
                if created:
                    self.stderr.write(
                        f"Created user {email} (verified email, no password: they can set "
                        "one with 'Forgot password')."
                    )
                if org:
                    organization = Organization.objects.filter(slug=org).first()
                    if organization is None:
                        raise CommandError(f"No organization with slug {org!r}.")
                else:
                    organization = personal_org(user)
                    if organization is None:
                        raise CommandError(f"{email} has no personal organization.")
                if plan_obj is not None and organization.plan_id != plan_obj.pk:
                    org_set_plan(
                        orgs=Organization.objects.filter(pk=organization.pk), plan=plan_obj
                    )
                    self.stderr.write(f"{organization.name} is now on plan {plan_obj.name}.")
                key, secret = apikey_create(
                    owner=user, org=organization, name=name, actor_label=ACTOR_LABEL
                )
        except ApiError as exc:
            hint = "; pass --create-user to create one" if exc.status == 404 else ""
            raise CommandError(exc.message + hint) from None
        self.stderr.write(f"Created key {key.display_prefix} ({key.name!r}) for {email}.")
        self.stdout.write(secret)
