from django.contrib.admin import apps as admin_apps


# The module, not the class, is imported: a second AppConfig class in this module's namespace
# would be taken for the `portal` app's own config.
class PortalAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the portal's site (portal/admin_site.py): the operator console."""

    default = False  # not the `portal` app's own config: only where INSTALLED_APPS names it
    default_site = "portal.admin_site.PortalAdminSite"
