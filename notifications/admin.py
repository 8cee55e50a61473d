"""The operator's view of notifications: what was sent to whom, and webhook deliveries, read
only and searchable, with "resend" for deliveries (a service call, like every admin action)."""

from __future__ import annotations

from django.contrib import admin, messages

from metering.admin import ReadOnlyAdmin
from notifications.models import InboxItem, Notification, WebhookDelivery, WebhookEndpoint
from notifications.services import webhook_resend


class InboxInline(admin.TabularInline):
    model = InboxItem
    fields = ("user", "read_at", "created_at")
    readonly_fields = fields
    raw_id_fields = ("user",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "event", "org", "title", "threshold", "period", "delivered")
    list_filter = ("event", "delivered")
    search_fields = ("event_id", "title", "org__name", "org__slug")
    list_select_related = ("org",)
    raw_id_fields = ("org",)
    date_hierarchy = "created_at"
    show_full_result_count = False
    inlines = [InboxInline]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("url", "org", "created_at", "failing_since", "disabled_at")
    search_fields = ("url", "org__name", "org__slug")
    list_select_related = ("org",)
    exclude = ("secret",)  # never shown after creation, not even to staff
    raw_id_fields = ("org", "created_by")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "event_id",
        "event",
        "endpoint",
        "status",
        "response_code",
        "attempts",
        "next_attempt_at",
    )
    list_filter = ("status", "event")
    search_fields = ("event_id", "endpoint__url", "endpoint__org__name")
    list_select_related = ("endpoint",)
    raw_id_fields = ("endpoint", "notification")
    show_full_result_count = False
    actions = ["resend"]

    @admin.action(description="Resend the selected deliveries' events")
    def resend(self, request, queryset):
        count = 0
        for delivery in queryset.select_related("endpoint"):
            webhook_resend(delivery=delivery, actor=request.user)
            count += 1
        self.message_user(request, f"{count} deliveries queued again.", messages.SUCCESS)
