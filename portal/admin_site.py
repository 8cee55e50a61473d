"""The admin as an operator console: branded, sections in the order an operator works, and the
fleet dashboard on the index page."""

from __future__ import annotations

from functools import partial

from django.contrib import admin
from django.urls import path

from ops import admin_views
from ops.fleet import fleet_dashboard_cached

# Section, then (app label, model order within the app; models not named follow by name).
# Customers go by app label, so that models added to `accounts` (organizations) slot in first.
SECTIONS: list[tuple[str, list[tuple[str, list[str]]]]] = [
    ("Fleet", [("catalog", ["routerpool", "router", "catalogmodel"])]),
    (
        "Customers",
        [
            ("accounts", ["organization", "membership", "invitation", "user", "plan"]),
            ("apikeys", ["apikey", "apikeyevent"]),
        ],
    ),
    ("Usage", [("metering", ["dailyusage", "usagerecord", "quarantinedusage", "usagepending"])]),
    ("Status", [("ops", ["incident", "modelhealth", "modelday"])]),
    ("Staff actions", [("audit", ["staffaction"])]),
    ("Access", [("account", ["emailaddress"]), ("mfa", []), ("auth", ["group"])]),
]
# Plain words where Django's would be a class name.
PLAIN_NAMES = {
    ("catalog", "catalogmodel"): "Models",
    ("apikeys", "apikey"): "API keys",
    ("apikeys", "apikeyevent"): "API key events",
    ("metering", "dailyusage"): "Daily usage ledgers",
    ("metering", "usagerecord"): "Usage records",
}


class PortalAdminSite(admin.AdminSite):
    site_header = "Cortensor Portal operations"
    site_title = "Cortensor Portal operations"
    index_title = "Cortensor Portal operations"
    index_template = "admin/portal_index.html"
    # The sidebar takes a quarter of a 1280 px screen from every list; the index and the
    # breadcrumbs lead everywhere.
    enable_nav_sidebar = False

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            for model in app["models"]:
                plain = PLAIN_NAMES.get((app["app_label"], model["object_name"].lower()))
                if plain:
                    model["name"] = plain
        if app_label:
            return apps
        by_label = {app["app_label"]: app for app in apps}
        sections = []
        for name, members in SECTIONS:
            models, first = [], None
            for label, order in members:
                app = by_label.pop(label, None)
                if app is None:
                    continue
                first = first or app

                def rank(model, order=order):
                    key = model["object_name"].lower()
                    return (order.index(key) if key in order else len(order), model["name"])

                models.extend(sorted(app["models"], key=rank))
            if models:
                sections.append({**first, "name": name, "models": models})
        # Apps no section names (a new one) go last, as Django would list them.
        for app in by_label.values():
            sections.append(app)
        return sections

    def get_urls(self):
        def view(fn):
            return self.admin_view(partial(fn, admin_site=self))

        # Before the model admins' own: their "<object id>/" pattern would take these paths.
        return [
            path(
                "catalog/router/<int:pk>/act/<slug:action>/",
                view(admin_views.router_action),
                name="ops_router_action",
            ),
            path(
                "catalog/router/<int:pk>/try/",
                view(admin_views.router_try_view),
                name="ops_router_try",
            ),
            path(
                "catalog/routerpool/<int:pk>/weights/",
                view(admin_views.pool_weights),
                name="ops_pool_weights",
            ),
            path(
                "catalog/catalogmodel/<int:pk>/try/",
                view(admin_views.model_try_view),
                name="ops_model_try",
            ),
            *super().get_urls(),
        ]

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "fleet": fleet_dashboard_cached()}
        return super().index(request, extra_context)
