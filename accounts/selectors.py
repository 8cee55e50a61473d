"""Reads on organizations, always scoped to the user asking: another organization's objects
are a 404, never a 403 (STYLE 7)."""

from __future__ import annotations

from django.http import Http404

from accounts.models import Invitation, Membership, Organization, User

SESSION_ORG = "org_id"


def personal_org(user: User) -> Organization | None:
    return Organization.objects.filter(memberships__user=user, personal=True).first()


def memberships_of(user: User) -> list[Membership]:
    """The user's memberships, personal organization first, with their organizations."""
    return list(
        Membership.objects.filter(user=user)
        .select_related("org", "org__plan", "user")
        .order_by("-org__personal", "org__name", "org_id")
    )


def membership_for(*, user: User, slug: str) -> Membership:
    """The user's membership in the organization `slug`; a 404 if they have none."""
    membership = (
        Membership.objects.select_related("org", "org__plan", "user")
        .filter(user=user, org__slug=slug)
        .first()
    )
    if membership is None:
        raise Http404("No such organization")
    return membership


def request_memberships(request) -> list[Membership]:
    """The logged-in user's memberships (personal first), read once per request: the
    switcher and the current organization share this one query."""
    cached = getattr(request, "_org_memberships", None)
    if cached is None:
        cached = memberships_of(request.user)
        request._org_memberships = cached
    return cached


def current_membership(request) -> Membership | None:
    """The organization the logged-in user acts for: the one chosen in the switcher (kept in
    the session), else their personal one. Read from the database on every request, so a
    removed member falls back at once."""
    if not request.user.is_authenticated:
        return None
    memberships = request_memberships(request)
    chosen = request.session.get(SESSION_ORG)
    for membership in memberships:
        if membership.org_id == chosen:
            return membership
    return memberships[0] if memberships else None


def acting_membership(request) -> Membership:
    """`current_membership` for pages that need one (behind login_required): every user has a
    personal organization, so a missing one is a 404 rather than a crash."""
    membership = current_membership(request)
    if membership is None:
        raise Http404("No organization")
    return membership


def org_member_for(*, org: Organization, member_id) -> Membership:
    try:
        return Membership.objects.select_related("user", "org").get(org=org, pk=int(member_id))
    except (Membership.DoesNotExist, ValueError, TypeError):
        raise Http404("No such member") from None


def org_invitation_for(*, org: Organization, invitation_id) -> Invitation:
    try:
        return Invitation.objects.get(org=org, pk=int(invitation_id))
    except (Invitation.DoesNotExist, ValueError, TypeError):
        raise Http404("No such invitation") from None


def org_members(org: Organization) -> list[Membership]:
    return list(Membership.objects.filter(org=org).select_related("user").order_by("created_at"))


def org_invitations_pending(org: Organization) -> list[Invitation]:
    from django.utils import timezone

    return list(
        Invitation.objects.filter(
            org=org,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        ).select_related("invited_by")
    )
