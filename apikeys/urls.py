from django.urls import path

from apikeys import api, views

app_name = "apikeys"

urlpatterns = [
    path("keys", views.keys_page, name="keys"),
    path("keys/<int:key_id>", views.key_page, name="key"),
    path("keys/<int:key_id>/rotate", views.key_rotate, name="rotate"),
    path("keys/<int:key_id>/revoke", views.key_revoke, name="revoke"),
    path("api/keys", api.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api/keys/<int:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key"),
    path("api/keys/<int:key_id>/revoke", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("api/keys/<int:key_id>/rotate", api.ApiKeyRotateApi.as_view(), name="api-key-rotate"),
    # The same, for a named organization of the user's (anything else is a 404).
    path("api/orgs/<slug:slug>/keys", api.OrgApiKeyListCreateApi.as_view(), name="api-org-keys"),
    path(
        "api/orgs/<slug:slug>/keys/<int:key_id>",
        api.OrgApiKeyDetailApi.as_view(),
        name="api-org-key",
    ),
    path(
        "api/orgs/<slug:slug>/keys/<int:key_id>/revoke",
        api.OrgApiKeyRevokeApi.as_view(),
        name="api-org-key-revoke",
    ),
    path(
        "api/orgs/<slug:slug>/keys/<int:key_id>/rotate",
        api.OrgApiKeyRotateApi.as_view(),
        name="api-org-key-rotate",
    ),
]
