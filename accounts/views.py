"""The organization pages: /org (members, roles, invitations), the switcher, joining by an
invitation link. Every action checks the member's role on the server (the services do), and
every object is looked up within the current organization: another one's is a 404."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_ratelimit.decorators import ratelimit

from accounts.emails import invitation_send
from accounts.forms import DeleteOrgForm, InviteForm, OrgCreateForm, RemoveMemberForm, RoleForm
from accounts.models import Role
from accounts.selectors import (
    SESSION_ORG,
    acting_membership,
    membership_for,
    org_invitation_for,
    org_invitations_pending,
    org_member_for,
    org_members,
    request_memberships,
)
from accounts.services import (
    invitation_accept,
    invitation_by_token,
    invitation_create,
    invitation_revoke,
    member_remove,
    member_set_role,
    org_create,
    org_delete,
)
from core.errors import ApiError


def _org_page(request, *, invite_form=None, create_form=None, status: int = 200):
    membership = acting_membership(request)
    org = membership.org
    can_manage = membership.allows(Role.ADMIN)
    members = org_members(org)
    owners = sum(1 for member in members if member.role == Role.OWNER)
    context = {
        "org": org,
        "membership": membership,
        "can_manage": can_manage,
        "is_owner": membership.allows(Role.OWNER),
        "members": members,
        # The only owner cannot leave (make someone else owner first): no button to fail.
        "sole_owner": membership.role == Role.OWNER and owners == 1,
        "invitations": org_invitations_pending(org) if can_manage else [],
        "invite_form": invite_form or InviteForm(),
        "create_form": create_form or OrgCreateForm(),
        "role_form": RoleForm(),
        "roles": Role.values,
    }
    return render(request, "accounts/org.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET"])
def org_page(request):
    return _org_page(request)


@never_cache
@login_required
@require_POST
@ratelimit(key="user", rate="30/m", method="POST", block=True)
def org_invite(request):
    membership = acting_membership(request)
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _org_page(request, invite_form=form, status=400)
    try:
        invitation, _token = invitation_create(
            actor=membership,
            email=form.cleaned_data["email"],
            role=form.cleaned_data["role"],
            send=invitation_send(request),
        )
    except ApiError as exc:
        if exc.status == 403:
            raise Http404("No such page") from None
        form.add_error("email" if exc.param == "email" else None, exc.message)
        return _org_page(request, invite_form=form, status=exc.status)
    messages.success(request, f"Invitation sent to {invitation.email}.")
    return redirect("accounts:org")


@never_cache
@login_required
@require_POST
def org_invitation_revoke(request, invitation_id: int):
    membership = acting_membership(request)
    if not membership.allows(Role.ADMIN):
        raise Http404("No such invitation")
    invitation = org_invitation_for(org=membership.org, invitation_id=invitation_id)
    invitation_revoke(actor=membership, invitation=invitation)
    messages.success(request, f"The invitation to {invitation.email} is revoked.")
    return redirect("accounts:org")


@never_cache
@login_required
@require_POST
def org_member_role(request, member_id: int):
    membership = acting_membership(request)
    if not membership.allows(Role.ADMIN):
        raise Http404("No such member")
    target = org_member_for(org=membership.org, member_id=member_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role.")
        return redirect("accounts:org")
    try:
        member_set_role(actor=membership, membership=target, role=form.cleaned_data["role"])
    except ApiError as exc:
        messages.error(request, exc.message)
        return redirect("accounts:org")
    messages.success(request, f"{target.user.email} is now {form.cleaned_data['role']}.")
    return redirect("accounts:org")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def org_member_remove(request, member_id: int):
    """A deliberate act: a page that says what happens, and a box to tick."""
    membership = acting_membership(request)
    target = org_member_for(org=membership.org, member_id=member_id)
    if target.pk != membership.pk and not membership.allows(Role.ADMIN):
        raise Http404("No such member")
    form = RemoveMemberForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            member_remove(actor=membership, membership=target)
        except ApiError as exc:
            messages.error(request, exc.message)
            return redirect("accounts:org")
        if target.pk == membership.pk:
            request.session.pop(SESSION_ORG, None)
            messages.success(request, f"You left {membership.org.name}.")
            return redirect("dashboard")
        messages.success(
            request,
            f"{target.user.email} is removed; the keys they created here are revoked.",
        )
        return redirect("accounts:org")
    status = 400 if form.is_bound else 200
    context = {"target": target, "form": form, "own": target.pk == membership.pk}
    return render(request, "accounts/org_remove.html", context, status=status)


@never_cache
@login_required
@require_POST
@ratelimit(key="user", rate="10/m", method="POST", block=True)
def org_new(request):
    form = OrgCreateForm(request.POST)
    if not form.is_valid():
        return _org_page(request, create_form=form, status=400)
    try:
        org = org_create(name=form.cleaned_data["name"], owner=request.user)
    except ApiError as exc:
        form.add_error("name", exc.message)
        return _org_page(request, create_form=form, status=400)
    request.session[SESSION_ORG] = org.pk
    messages.success(request, f"Created {org.name}: you are its owner. Invite your team below.")
    return redirect("accounts:org")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def org_delete_page(request):
    """Owners only, never a personal organization; a page that says what goes, and a box."""
    membership = acting_membership(request)
    if not membership.allows(Role.OWNER) or membership.org.personal:
        raise Http404("No such page")
    form = DeleteOrgForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        name = membership.org.name
        org_delete(actor=membership)
        request.session.pop(SESSION_ORG, None)
        messages.success(request, f"{name} is deleted; its keys are refused from now on.")
        return redirect("dashboard")
    status = 400 if form.is_bound else 200
    context = {"org": membership.org, "form": form}
    return render(request, "accounts/org_delete.html", context, status=status)


@login_required
@require_POST
def org_switch(request):
    """The switcher: act for another organization of the user's (a 404 for any other)."""
    membership = membership_for(user=request.user, slug=request.POST.get("org", ""))
    request.session[SESSION_ORG] = membership.org_id
    target = request.POST.get("next") or "/dashboard"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/dashboard"
    return redirect(target)


@never_cache
@require_http_methods(["GET", "POST"])
def org_join(request, token: str):
    """The emailed link. Logged out: sign up or log in first, then come back here."""
    invitation = invitation_by_token(token)
    if invitation is None or invitation.status in ("revoked",):
        raise Http404("No such invitation")
    if not request.user.is_authenticated:
        context = {"invitation": invitation, "next": request.path}
        return render(request, "accounts/org_join.html", context)
    if request.method == "POST":
        try:
            joined = invitation_accept(token=token, user=request.user)
        except ApiError as exc:
            context = {"invitation": invitation, "error": exc.message}
            return render(request, "accounts/org_join.html", context, status=exc.status)
        request.session[SESSION_ORG] = joined.org_id
        messages.success(request, f"You joined {joined.org.name} as {joined.role}.")
        return redirect("dashboard")
    return render(request, "accounts/org_join.html", {"invitation": invitation})


def switcher_memberships(request) -> list:
    """For the navigation: the user's organizations, when there is more than one."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    memberships = request_memberships(request)
    return memberships if len(memberships) > 1 else []
