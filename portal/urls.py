from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView

from portal import dashboard, landing, views
from portal.metrics import metrics_view

# The admin logs in through allauth: its rate limits and, for staff who enabled it, MFA.
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    path("", landing.landing, name="landing"),
    path("dashboard", dashboard.dashboard, name="dashboard"),
    path("", include("apikeys.urls")),
    path("", include("catalog.urls")),
    path("", include("metering.urls")),
    path("", include("inference.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
]

handler400 = "portal.views.bad_request"
handler403 = "portal.views.permission_denied"
handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
