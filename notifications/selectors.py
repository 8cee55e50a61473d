"""Reads on notifications, scoped to the user or organization asking (another one's objects
are a 404)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import Membership, Organization, User
from notifications.models import InboxItem, WebhookDelivery, WebhookEndpoint

PAGE_SIZE = 50


def inbox_for(*, user: User, limit: int = PAGE_SIZE) -> list[InboxItem]:
    return list(
        InboxItem.objects.filter(user=user)
        .select_related("notification", "notification__org")
        .order_by("-created_at", "-pk")[:limit]
    )


def inbox_item_for(*, user: User, item_id) -> InboxItem:
    try:
        return InboxItem.objects.select_related("notification", "notification__org").get(
            user=user, pk=int(item_id)
        )
    except (InboxItem.DoesNotExist, TypeError, ValueError):
        raise Http404("No such notification") from None


def webhook_endpoints_for(*, org: Organization) -> list[WebhookEndpoint]:
    return list(WebhookEndpoint.objects.filter(org=org))


def webhook_endpoint_for(*, membership: Membership, endpoint_id) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(org_id=membership.org_id, pk=int(endpoint_id))
    except (WebhookEndpoint.DoesNotExist, TypeError, ValueError):
        raise Http404("No such endpoint") from None


def webhook_deliveries_for(
    *, endpoint: WebhookEndpoint, limit: int = PAGE_SIZE
) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk")[:limit]
