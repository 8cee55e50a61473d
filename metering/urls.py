from django.urls import path

from metering import api, views

urlpatterns = [
    path("usage", views.usage_page, name="usage"),
    path("usage/export.csv", views.usage_export_csv, name="usage-export"),
    path("v1/usage", api.UsageApi.as_view(), name="api-usage"),
]
