from django.urls import path

from apikeys import api, views

app_name = "apikeys"

urlpatterns = [
    path("keys", views.keys_page, name="keys"),
    path("keys/<int:key_id>/revoke", views.key_revoke, name="revoke"),
    path("api/keys", api.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api/keys/<int:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key"),
    path("api/keys/<int:key_id>/revoke", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
]
