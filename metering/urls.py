from django.urls import path

from metering import views

urlpatterns = [
    path("usage", views.usage_page, name="usage"),
    path("usage/export.csv", views.usage_export_csv, name="usage-export"),
]
