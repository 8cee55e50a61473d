from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Status and insights"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from catalog.router_client import register_router_figures
        from ops.services import router_stats_cached

        register_router_figures(router_stats_cached)
