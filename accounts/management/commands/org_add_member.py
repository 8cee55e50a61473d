"""`manage.py org_add_member --org SLUG --email EMAIL --role owner|admin|member [--create-user]`

Adds the user to the organization (or changes their role there)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Organization, Role
from accounts.services import member_add, user_for_email
from core.errors import ApiError


class Command(BaseCommand):
    help = "Add a user to an organization with a role (or change their role)."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="The organization's slug.")
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the user (verified email, no password) if missing.",
        )

    def handle(self, *args, org: str, email: str, role: str, create_user: bool, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"No organization with slug {org!r}.")
        try:
            with transaction.atomic():
                user, created = user_for_email(email=email, create=create_user)
                member_add(org=organization, user=user, role=role)
        except ApiError as exc:
            hint = "; pass --create-user to create one" if exc.status == 404 else ""
            raise CommandError(exc.message + hint) from None
        if created:
            self.stderr.write(f"Created user {user.email} (verified email, no password).")
        self.stderr.write(f"{user.email} is {role} of {organization.name!r} ({org}).")
