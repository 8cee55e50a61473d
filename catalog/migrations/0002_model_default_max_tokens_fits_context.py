from django.db import migrations, models


def old_default_to_fits_context(apps, schema_editor):
    """256 was the field's default, not anyone's choice: those models now answer a request
    without max_tokens with what fits the context (up to max_tokens), as OpenAI does."""
    apps.get_model("catalog", "CatalogModel").objects.filter(default_max_tokens=256).update(
        default_max_tokens=None
    )


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [
        migrations.AlterField(
            model_name="catalogmodel",
            name="default_max_tokens",
            field=models.PositiveIntegerField(
                blank=True,
                default=None,
                help_text="Empty: whatever fits the context after the prompt, up to max_tokens.",
                null=True,
            ),
        ),
        migrations.RunPython(old_default_to_fits_context, migrations.RunPython.noop),
    ]
