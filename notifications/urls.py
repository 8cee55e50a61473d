from django.urls import path

from notifications import api, views

app_name = "notifications"

urlpatterns = [
    path("notifications", views.notification_list, name="list"),
    path("notifications/read", views.notification_mark_read, name="read-all"),
    path("notifications/<int:item_id>", views.notification_open, name="open"),
    path("notifications/<int:item_id>/read", views.notification_mark_read, name="read"),
    path("notifications/settings", views.notification_settings, name="settings"),
    path("notifications/thresholds", views.notification_thresholds, name="thresholds"),
    path("notifications/webhooks", views.webhooks, name="webhooks"),
    path("notifications/webhooks/<int:endpoint_id>", views.webhook_detail, name="webhook"),
    path(
        "notifications/webhooks/<int:endpoint_id>/<str:action>",
        views.webhook_action,
        name="webhook-action",
    ),
    path("notifications/unsubscribe/<str:token>", views.unsubscribe, name="unsubscribe"),
    path("api/notifications", api.NotificationListApi.as_view(), name="api-list"),
    path("api/notifications/read", api.NotificationMarkReadApi.as_view(), name="api-read"),
]
