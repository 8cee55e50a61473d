from django.urls import path

from metering import views

urlpatterns = [
    path("usage", views.usage_page, name="usage"),
    path("usage/export.csv", views.usage_export_csv, name="usage-export"),
    path("requests", views.requests_page, name="requests"),
    path("requests/export.csv", views.requests_export_csv, name="requests-export"),
    path("requests/<str:request_id>", views.request_detail, name="request"),
]
