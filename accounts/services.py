"""Writes on accounts: users, organizations, memberships and invitations. The pages, the
management API, the admin and the commands all call these."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import (
    Invitation,
    Membership,
    Organization,
    Plan,
    Role,
    User,
    invitation_token_hash,
)
from accounts.signals import member_removed, orgs_changed, users_bulk_changed
from audit.services import staff_actions_record
from core.errors import InvalidRequest, NotFound, PermissionDeniedError, RateLimited

log = logging.getLogger(__name__)

INVITATIONS_PER_HOUR = 20  # per organization: invitations are mail we send to strangers


# --- users ----------------------------------------------------------------------------------


def _bulk_update(users: QuerySet[User], **fields) -> int:
    """One UPDATE for the rows, then, after commit, `users_bulk_changed`: caches built from
    these users (their API keys' entries carry the active flag) are rewritten, since a bulk
    update sends no post_save."""
    with transaction.atomic():
        user_ids = list(users.values_list("pk", flat=True))
        updated = User.objects.filter(pk__in=user_ids).update(**fields)
        transaction.on_commit(lambda: users_bulk_changed.send(sender=User, user_ids=user_ids))
    return updated


def users_set_active(*, users: QuerySet[User], active: bool, actor=None) -> int:
    """Suspend (active=False) or reinstate users. A suspended user cannot log in, and their
    API keys answer 401 from the next request on, in every process. With an `actor` (staff),
    each change is on record."""
    with transaction.atomic():
        if actor is not None:
            staff_actions_record(
                actor=actor,
                action="user.reinstate" if active else "user.suspend",
                changes=[
                    (u, {"is_active": u.is_active}, {"is_active": active})
                    for u in users
                    if u.is_active != active
                ],
            )
        return _bulk_update(users, is_active=active)


# --- organizations --------------------------------------------------------------------------


def _new_slug(name: str) -> str:
    base = slugify(name)[:40].strip("-") or "org"
    return f"{base}-{secrets.token_hex(3)}"


def org_create(
    *, name: str, owner: User, plan: Plan | None = None, personal: bool = False
) -> Organization:
    """A new organization with `owner` as its first owner. No plan: the default plan."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("Give the organization a name.", param="name")
    if len(name) > 100:
        raise InvalidRequest("An organization name has at most 100 characters.", param="name")
    with transaction.atomic():
        for _attempt in range(5):
            try:
                with transaction.atomic():
                    org = Organization.objects.create(
                        name=name,
                        slug=_new_slug(name),
                        plan=plan or Plan.objects.default(),
                        personal=personal,
                    )
                break
            except IntegrityError:  # a slug collision: 16M suffixes per name, try another
                continue
        else:
            raise InvalidRequest("Could not pick a free slug; try again.", param="name")
        Membership.objects.create(org=org, user=owner, role=Role.OWNER)
    log.info("organization created", extra={"org_id": org.pk, "personal": personal})
    return org


def org_create_personal(*, user: User, plan: Plan | None = None) -> Organization:
    """The organization every user has from sign-up on; named after them."""
    return org_create(name=user.email.split("@")[0], owner=user, plan=plan, personal=True)


def _orgs_update(orgs: QuerySet[Organization], **fields) -> int:
    with transaction.atomic():
        org_ids = list(orgs.values_list("pk", flat=True))
        updated = Organization.objects.filter(pk__in=org_ids).update(**fields)
        transaction.on_commit(lambda: orgs_changed.send(sender=Organization, org_ids=org_ids))
    return updated


def org_set_plan(*, orgs: QuerySet[Organization], plan: Plan | None, actor=None) -> int:
    """Move organizations to `plan` (None: the default plan). Their keys' limits change from
    the next request on, in every process. With an `actor` (staff), each move is on record,
    plan before → after."""
    with transaction.atomic():
        if actor is not None:
            after = {"plan": plan.name if plan else None}
            staff_actions_record(
                actor=actor,
                action="org.set_plan",
                changes=[
                    (o, {"plan": o.plan.name if o.plan else None}, after)
                    for o in orgs.select_related("plan")
                    if o.plan_id != (plan.pk if plan else None)
                ],
            )
        return _orgs_update(orgs, plan=plan)


def orgs_set_suspended(*, orgs: QuerySet[Organization], suspended: bool, actor=None) -> int:
    """Suspend (every key of theirs answers 401 from the next request on) or reinstate. With
    an `actor` (staff), each change is on record."""
    with transaction.atomic():
        if actor is not None:
            staff_actions_record(
                actor=actor,
                action="org.suspend" if suspended else "org.reinstate",
                changes=[
                    (o, {"suspended": o.suspended_at is not None}, {"suspended": suspended})
                    for o in orgs
                    if (o.suspended_at is not None) != suspended
                ],
            )
        return _orgs_update(orgs, suspended_at=timezone.now() if suspended else None)


def org_delete(*, actor: Membership) -> None:
    """Delete the actor's organization (owners only; never a personal one). Its keys go with
    it, each cache entry rewritten after commit: they answer 401 at once. Its usage records
    and ledgers stay (they are the history of what was billed)."""
    _require(actor, Role.OWNER)
    org = actor.org
    if org.personal:
        raise InvalidRequest(
            "A personal organization cannot be deleted.", param="org", code="personal_org"
        )
    with transaction.atomic():
        Organization.objects.filter(pk=org.pk).delete()
    log.info("organization deleted", extra={"org_id": org.pk})


# --- members --------------------------------------------------------------------------------


def member_add(*, org: Organization, user: User, role: str) -> Membership:
    """Add `user` to `org` with `role`, or change the role of a member already there."""
    role = _role(role)
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            org=org, user=user, defaults={"role": role}
        )
        if not created and membership.role != role:
            _keep_an_owner(membership, role)
            membership.role = role
            membership.save(update_fields=["role"])
    return membership


def _role(role: str) -> str:
    if role not in Role.values:
        raise InvalidRequest(
            f"role must be one of {', '.join(Role.values)}.", param="role", code="invalid_role"
        )
    return role


def _keep_an_owner(membership: Membership, new_role: str | None) -> None:
    """Refuse a change that would leave the organization without an owner."""
    if membership.role != Role.OWNER or new_role == Role.OWNER:
        return
    owners = Membership.objects.select_for_update().filter(
        org_id=membership.org_id, role=Role.OWNER
    )
    if owners.count() <= 1:
        raise InvalidRequest(
            "An organization always has an owner: make someone else owner first.",
            param="role",
            code="last_owner",
        )


def _require(actor: Membership, role: str) -> None:
    if not actor.allows(role):
        raise PermissionDeniedError(
            f"This needs the {role} role in the organization.", code="permission_denied"
        )


def member_set_role(*, actor: Membership, membership: Membership, role: str) -> Membership:
    """Change a member's role. Admins manage members and admins; only owners touch owners."""
    role = _role(role)
    _require(actor, Role.ADMIN)
    if Role.OWNER in (role, membership.role):
        _require(actor, Role.OWNER)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        _keep_an_owner(membership, role)
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def member_remove(*, actor: Membership, membership: Membership) -> None:
    """Remove a member (or leave, when it is the actor's own membership). The keys they
    created in the organization are revoked in the same transaction: their next request
    answers 401 in every process."""
    own = actor.pk == membership.pk
    if not own:
        _require(actor, Role.ADMIN)
        if membership.role == Role.OWNER:
            _require(actor, Role.OWNER)
    if membership.org.personal and membership.role == Role.OWNER:
        raise InvalidRequest(
            "A personal organization keeps its owner.", param="member", code="personal_owner"
        )
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        _keep_an_owner(membership, None)
        org_id, user_id = membership.org_id, membership.user_id
        membership.delete()
        member_removed.send(sender=Membership, org_id=org_id, user_id=user_id, actor=actor.user)
    log.info("member removed", extra={"org_id": org_id, "user_id": user_id})


# --- invitations ----------------------------------------------------------------------------


def invitation_create(
    *, actor: Membership, email: str, role: str, send=None
) -> tuple[Invitation, str]:
    """Invite `email` with `role`; returns the invitation and its token (the email's link is
    its only other copy). `send(invitation, token)` mails it after commit."""
    _require(actor, Role.ADMIN)
    role = _role(role)
    if role == Role.OWNER:
        _require(actor, Role.OWNER)
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254:
        raise InvalidRequest("Enter a valid email address.", param="email", code="invalid_email")
    org = actor.org
    if Membership.objects.filter(org=org, user__email__iexact=email).exists():
        raise InvalidRequest(f"{email} is a member already.", param="email", code="already_member")
    since = timezone.now() - timedelta(hours=1)
    if Invitation.objects.filter(org=org, created_at__gte=since).count() >= INVITATIONS_PER_HOUR:
        raise RateLimited(
            f"At most {INVITATIONS_PER_HOUR} invitations an hour per organization; "
            "try again later.",
            headers={"Retry-After": "3600"},
        )
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            org=org,
            email=email,
            role=role,
            token_hash=invitation_token_hash(token),
            invited_by=actor.user,
        )
        if send is not None:
            transaction.on_commit(lambda: send(invitation, token))
    log.info("invitation created", extra={"org_id": org.pk, "invitation_id": invitation.pk})
    return invitation, token


def invitation_revoke(*, actor: Membership, invitation: Invitation) -> Invitation:
    _require(actor, Role.ADMIN)
    if invitation.org_id != actor.org_id:
        raise NotFound("No such invitation.")
    Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    invitation.refresh_from_db()
    return invitation


def invitation_by_token(token: str) -> Invitation | None:
    return (
        Invitation.objects.select_related("org", "invited_by")
        .filter(token_hash=invitation_token_hash(token or ""))
        .first()
    )


def invitation_accept(*, token: str, user: User) -> Membership:
    """Join the invitation's organization. Single use, within its 7 days, and only for a user
    with a verified email address equal to the invited one."""
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update()
            .select_related("org")
            .filter(token_hash=invitation_token_hash(token or ""))
            .first()
        )
        if invitation is None or invitation.revoked_at is not None:
            raise NotFound("This invitation does not exist or was revoked.")
        if invitation.accepted_at is not None:
            raise InvalidRequest(
                "This invitation was used already.", param="token", code="invitation_used"
            )
        if invitation.expires_at <= timezone.now():
            raise InvalidRequest(
                "This invitation has expired: ask for a new one.",
                param="token",
                code="invitation_expired",
            )
        verified = EmailAddress.objects.filter(
            user=user, email__iexact=invitation.email, verified=True
        ).exists()
        if not verified:
            raise PermissionDeniedError(
                f"This invitation is for {invitation.email}: log in with that address, "
                "verified, to accept it.",
                code="email_mismatch",
            )
        membership, _created = Membership.objects.get_or_create(
            org=invitation.org, user=user, defaults={"role": invitation.role}
        )
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
    return membership


def user_for_email(*, email: str, create: bool = False) -> tuple[User, bool]:
    """The user with this email; with `create`, made if missing (verified email, no
    password: they set one with "Forgot password"). Returns (user, created)."""
    email = (email or "").strip().lower()
    if not email or "@" not in email:
        raise InvalidRequest(f"{email!r} is not an email address.", param="email")
    user = User.objects.filter(email__iexact=email).first()
    if user is not None:
        return user, False
    if not create:
        raise NotFound(f"No user with email {email}")
    user = User.objects.create_user(email=email, password=None)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user, True
