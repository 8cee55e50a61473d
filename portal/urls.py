from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from portal import views

urlpatterns = [
    path("", include("accounts.urls")),
    path("", include("apikeys.urls")),
    path("", include("catalog.urls")),
    path("", include("metering.urls")),
    path("", include("inference.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("openapi.json", SpectacularAPIView.as_view(), name="openapi-schema"),
]

handler400 = "portal.views.bad_request"
handler403 = "portal.views.permission_denied"
handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
