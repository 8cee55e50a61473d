from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Staff actions"
    default_auto_field = "django.db.models.BigAutoField"
