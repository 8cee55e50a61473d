"""Usage records and ledgers carry the organization that owns their key (accounts 0002,
apikeys 0003): filled from the key, else from the user's personal organization."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FILL = [
    # from the key's organization
    """UPDATE {table} SET org_id = (
           SELECT k.org_id FROM apikeys_apikey k WHERE k.id = {table}.key_id
       ) WHERE org_id IS NULL""",
    # a key deleted since: the user's personal organization
    """UPDATE {table} SET org_id = (
           SELECT m.org_id FROM accounts_membership m
           JOIN accounts_organization o ON o.id = m.org_id
           WHERE o.personal AND m.role = 'owner' AND m.user_id = {table}.user_id
       ) WHERE org_id IS NULL""",
]


def fill_organizations(apps, schema_editor):
    for table in ("metering_usagerecord", "metering_dailyusage"):
        for statement in FILL:
            schema_editor.execute(statement.format(table=table))


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_organizations"),
        ("apikeys", "0003_apikey_org"),
        ("metering", "0005_usage_endpoint_messages"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="org",
            field=models.ForeignKey(db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name="+", to="accounts.organization"),
        ),
        migrations.AddField(
            model_name="dailyusage",
            name="org",
            field=models.ForeignKey(db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name="+", to="accounts.organization"),
        ),
        migrations.RunPython(fill_organizations, migrations.RunPython.noop),
        # The organization's usage outlives a member's account (no database change).
        migrations.AlterField(
            model_name="usagerecord",
            name="user",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="dailyusage",
            name="user",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["org", "-created_at"], name="usage_org_recent"),
        ),
        migrations.AddIndex(
            model_name="dailyusage",
            index=models.Index(fields=["org", "day"], name="daily_usage_org_day"),
        ),
    ]
