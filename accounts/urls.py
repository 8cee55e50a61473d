from django.urls import path

from accounts import dashboard, views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("dashboard", dashboard.dashboard, name="dashboard"),
]
