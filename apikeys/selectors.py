"""Reads for the key pages, the management API and the admin: always scoped to an owner or to
what a member of an organization may see."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Membership
from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import apikeys_visible_to
from catalog.models import CatalogModel

EVENTS_SHOWN = 50


def apikey_list_for_owner(*, owner) -> QuerySet[ApiKey]:
    """The owner's keys, newest first, with their model subsets in one extra query."""
    return ApiKey.objects.for_owner(owner).prefetch_related("allowed_models")


def apikey_events_for_owner(*, owner, limit: int = EVENTS_SHOWN) -> list[ApiKeyEvent]:
    """The audit trail of the owner's keys, newest first (bounded: pages stay fast)."""
    return list(
        ApiKeyEvent.objects.filter(key__owner=owner)
        .select_related("key", "actor")
        .order_by("-created_at", "-pk")[:limit]
    )


def apikey_list_for_member(*, membership: Membership) -> QuerySet[ApiKey]:
    """The keys a member sees: all the organization's for an admin or owner, their own for a
    member; newest first, with their model subsets and creators."""
    return apikeys_visible_to(membership).select_related("owner").prefetch_related("allowed_models")


def apikey_events_for_member(*, membership: Membership, limit: int = EVENTS_SHOWN):
    """The audit trail of the keys the member sees, newest first (bounded)."""
    return list(
        ApiKeyEvent.objects.filter(key__in=apikeys_visible_to(membership))
        .select_related("key", "actor")
        .order_by("-created_at", "-pk")[:limit]
    )


def apikey_events_for_key(*, key: ApiKey, limit: int = EVENTS_SHOWN) -> list[ApiKeyEvent]:
    """One key's audit trail, newest first (bounded); the key was fetched scoped to its
    caller (apikey_get_for_member)."""
    return list(
        ApiKeyEvent.objects.filter(key=key)
        .select_related("key", "actor")
        .order_by("-created_at", "-pk")[:limit]
    )


def apikey_model_choices() -> QuerySet[CatalogModel]:
    """The models a key may be narrowed to: every enabled catalog model."""
    return CatalogModel.objects.filter(enabled=True).order_by("sort_order", "public_id")
