import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("apikeys", "0003_apikey_org"),
    ]

    operations = [
        migrations.AlterField(
            model_name="apikey",
            name="org",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="api_keys", to="accounts.organization"),
        ),
    ]
