"""Keys belong to an organization: every existing key moves to its creator's personal
organization (made by accounts 0002). 0004 then makes the column required."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def keys_to_personal_organizations(apps, schema_editor):
    ApiKey = apps.get_model("apikeys", "ApiKey")
    Membership = apps.get_model("accounts", "Membership")
    personal = dict(
        Membership.objects.filter(org__personal=True, role="owner").values_list("user_id", "org_id")
    )
    for owner_id in ApiKey.objects.filter(org__isnull=True).values_list("owner_id", flat=True).distinct():
        ApiKey.objects.filter(owner_id=owner_id, org__isnull=True).update(org_id=personal[owner_id])


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_organizations"),
        ("apikeys", "0002_apikey_playground_flag"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="org",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name="api_keys", to="accounts.organization"),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="owner",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="api_keys", to=settings.AUTH_USER_MODEL, verbose_name="created by"),
        ),
        migrations.RunPython(keys_to_personal_organizations, migrations.RunPython.noop),
    ]
