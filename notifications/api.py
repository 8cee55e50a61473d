"""The notification API for the logged-in user (session + CSRF): the list with the unread
count, and mark-as-read. Same services as the pages; errors in the portal's error shape."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.selectors import inbox_for
from notifications.services import inbox_mark_read, unread_count


class InboxItemSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    event_id = serializers.CharField(source="notification.event_id")
    type = serializers.CharField(source="notification.event")
    title = serializers.CharField(source="notification.title")
    details = serializers.JSONField(source="notification.data")
    organization = serializers.CharField(source="notification.org.slug")
    created_at = serializers.DateTimeField()
    read = serializers.SerializerMethodField()

    def get_read(self, item) -> bool:
        return item.read_at is not None


class MarkReadInputSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=1000,
        help_text="Which notifications; none: all of them.",
    )


_List = inline_serializer(
    "NotificationList",
    {
        "object": serializers.CharField(),
        "unread": serializers.IntegerField(),
        "data": InboxItemSerializer(many=True),
    },
)


class NotificationListApi(APIView):
    @extend_schema(operation_id="notifications_list", responses=_List)
    def get(self, request):
        items = inbox_for(user=request.user)
        response = Response(
            {
                "object": "list",
                "unread": unread_count(user_id=request.user.pk),
                "data": InboxItemSerializer(items, many=True).data,
            }
        )
        response["Cache-Control"] = "no-store"
        return response


class NotificationMarkReadApi(APIView):
    @extend_schema(
        operation_id="notifications_mark_read",
        request=MarkReadInputSerializer,
        responses=inline_serializer("NotificationsMarked", {"marked": serializers.IntegerField()}),
    )
    def post(self, request):
        body = MarkReadInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        marked = inbox_mark_read(user=request.user, item_ids=body.validated_data.get("ids"))
        return Response({"marked": marked})
