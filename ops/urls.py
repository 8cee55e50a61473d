from django.urls import path

from ops import insights_views, views

urlpatterns = [
    path("status", views.status_page, name="status"),
    path("status.json", views.status_json, name="status-json"),
    path("staff/insights", insights_views.insights_page, name="insights"),
    path("staff/insights/<slug:name>.csv", insights_views.insights_csv, name="insights-csv"),
]
