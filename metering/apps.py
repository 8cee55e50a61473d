from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "metering"
    verbose_name = "Usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A key's page (apikeys, below us) shows how much of each of its budgets is used.
        from apikeys.views import register_key_page_context
        from metering.selectors import key_budget_usage

        register_key_page_context(lambda key: {"budget_usage": key_budget_usage(key=key)})
