from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView

from portal import dashboard, devmail, landing, views
from portal.metrics import metrics_view

# The admin logs in through allauth: its rate limits and, for staff who enabled it, MFA.
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    # First: the API's paths are resolved on every request, and each pattern tried before the
    # one that matches costs its resolve (a missed include also builds the list of what it
    # tried, for a 404 page). No other pattern shares its paths, so the order is only speed.
    path("", include("inference.urls")),
    path("", landing.landing, name="landing"),
    path("dashboard", dashboard.dashboard, name="dashboard"),
    path("", include("accounts.urls")),
    path("", include("apikeys.urls")),
    path("", include("catalog.urls")),
    path("", include("metering.urls")),
    path("", include("ops.urls")),
    path("", include("notifications.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("dev/mail/", devmail.dev_mailbox, name="dev-mailbox"),
    path("dev/mail/<str:msg_id>/", devmail.dev_message, name="dev-message"),
    # Browsers and crawlers ask for these at the root whatever the page says.
    path("favicon.ico", views.static_redirect, {"name": "icons/favicon.ico"}),
    path("apple-touch-icon.png", views.static_redirect, {"name": "icons/apple-touch-icon.png"}),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
]

handler400 = "portal.views.bad_request"
handler403 = "portal.views.permission_denied"
handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
