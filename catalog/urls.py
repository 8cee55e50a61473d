from django.urls import path

from catalog import views

urlpatterns = [
    path("models", views.models_page, name="models"),
]
