from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("metering", "0003_usage_64bit_estimated_quarantine")]

    operations = [
        # Nullable, no default: added in place on SQLite (remaking the table would drop the
        # UsagePending trigger) and without a table rewrite on PostgreSQL.
        migrations.AddField(
            model_name="usagerecord",
            name="end_user",
            field=models.CharField(blank=True, max_length=256, null=True),
        ),
    ]
