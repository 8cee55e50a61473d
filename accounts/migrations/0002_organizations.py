"""Organizations own keys, plans, limits and usage. Every existing user gets a personal
organization on their plan, as its owner (0002 makes the tables, this data, 0003 drops the
user's plan: separate migrations, so PostgreSQL never alters a table with pending triggers)."""

import secrets

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils.text import slugify

import accounts.models


def personal_organizations(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    Organization = apps.get_model("accounts", "Organization")
    Membership = apps.get_model("accounts", "Membership")
    taken = set(Organization.objects.values_list("slug", flat=True))
    for user in User.objects.order_by("pk").iterator():
        if Membership.objects.filter(user=user, org__personal=True).exists():
            continue  # run twice (or partly before): one personal organization each
        name = user.email.split("@")[0][:100] or "personal"
        base = slugify(name)[:40].strip("-") or "org"
        slug = f"{base}-{secrets.token_hex(3)}"
        while slug in taken:
            slug = f"{base}-{secrets.token_hex(3)}"
        taken.add(slug)
        org = Organization.objects.create(
            name=name, slug=slug, plan_id=user.plan_id, personal=True
        )
        Membership.objects.create(org=org, user=user, role="owner")


def plans_back_to_users(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    Membership = apps.get_model("accounts", "Membership")
    for membership in Membership.objects.filter(org__personal=True).select_related("org"):
        User.objects.filter(pk=membership.user_id).update(plan_id=membership.org.plan_id)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Organization",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("slug", models.SlugField(max_length=64, unique=True)),
                ("personal", models.BooleanField(default=False, help_text="Made for one user at sign-up; cannot be left or deleted.")),
                ("suspended_at", models.DateTimeField(blank=True, help_text="Set: every key of the organization answers 401.", null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("plan", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="organizations", to="accounts.plan")),
            ],
            options={"ordering": ["name", "pk"]},
        ),
        migrations.CreateModel(
            name="Membership",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("role", models.CharField(choices=[("owner", "owner"), ("admin", "admin"), ("member", "member")], default="member", max_length=16)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("org", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to="accounts.organization")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "ordering": ["created_at", "pk"],
                "constraints": [models.UniqueConstraint(fields=("org", "user"), name="membership_unique")],
            },
        ),
        migrations.CreateModel(
            name="Invitation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("email", models.EmailField(max_length=254)),
                ("role", models.CharField(choices=[("owner", "owner"), ("admin", "admin"), ("member", "member")], default="member", max_length=16)),
                ("token_hash", models.CharField(editable=False, max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("expires_at", models.DateTimeField(default=accounts.models._invitation_expiry)),
                ("accepted_at", models.DateTimeField(blank=True, null=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                ("accepted_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL)),
                ("invited_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL)),
                ("org", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="invitations", to="accounts.organization")),
            ],
            options={"ordering": ["-created_at", "-pk"]},
        ),
        migrations.RunPython(personal_organizations, plans_back_to_users, elidable=False),
    ]
