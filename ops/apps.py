from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Status and insights"
    default_auto_field = "django.db.models.BigAutoField"
