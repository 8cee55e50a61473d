"""`manage.py org_create --name NAME --owner-email EMAIL [--plan PLAN] [--create-user]`

Prints only the new organization's slug on stdout, so scripts can capture it:
    ORG=$(python manage.py org_create --name Acme --owner-email ops@acme.example)
Everything else goes to stderr.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Plan
from accounts.services import org_create, user_for_email
from core.errors import ApiError


def plan_named(name: str | None) -> Plan | None:
    if not name:
        return None
    plan = Plan.objects.filter(name=name).first()
    if plan is None:
        known = ", ".join(Plan.objects.values_list("name", flat=True)) or "none"
        raise CommandError(f"No plan named {name!r} (plans: {known}).")
    return plan


class Command(BaseCommand):
    help = "Create an organization with an owner and print only its slug on stdout."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="The organization's name.")
        parser.add_argument("--owner-email", required=True, help="Its first owner.")
        parser.add_argument("--plan", help="Its plan (by name); default: the default plan.")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the owner (verified email, no password) if missing.",
        )

    def handle(self, *args, name: str, owner_email: str, plan: str | None, **options):
        plan_obj = plan_named(plan)
        try:
            with transaction.atomic():
                owner, created = user_for_email(email=owner_email, create=options["create_user"])
                org = org_create(name=name, owner=owner, plan=plan_obj)
        except ApiError as exc:
            hint = "; pass --create-user to create one" if exc.status == 404 else ""
            raise CommandError(exc.message + hint) from None
        if created:
            self.stderr.write(f"Created user {owner.email} (verified email, no password).")
        self.stderr.write(f"Created organization {org.name!r} owned by {owner.email}.")
        self.stdout.write(org.slug)
