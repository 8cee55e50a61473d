"""The plan belongs to the organization now (0002 moved every user's plan to their personal
organization)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_organizations"),
    ]

    operations = [
        migrations.RemoveField(model_name="user", name="plan"),
    ]
