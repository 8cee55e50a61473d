from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
    # allauth's own app is also labelled "Accounts" in the admin; keep the two apart.
    verbose_name = "Customers and plans"

    def ready(self) -> None:
        from accounts import receivers  # noqa: F401 - connects the personal-organization receiver
