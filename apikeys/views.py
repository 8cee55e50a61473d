"""The /keys pages: list, create (secret shown once), a key's page (edit its settings, rotate
its secret, its audit trail), revoke with a confirmation step.

The pages act for the user's current organization (the switcher): an admin or owner sees and
revokes all its keys, a member only their own. Every route fetches keys through
`apikey_get_for_member`, so another member's or organization's key is a 404. The
raw secret exists only in the response to the POST that made it: it is never put in the
session, a message or a cache, and the page is sent with `Cache-Control: no-store`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_ratelimit.decorators import ratelimit

from accounts.selectors import acting_membership
from apikeys.authentication import client_ip
from apikeys.forms import ApiKeyCreateForm, ApiKeyEditForm, ApiKeyRevokeForm, ApiKeyRotateForm
from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.selectors import (
    apikey_events_for_key,
    apikey_events_for_member,
    apikey_list_for_member,
)
from apikeys.services import (
    apikey_create,
    apikey_get_for_member,
    apikey_revoke,
    apikey_rotate,
    apikey_update,
)
from core.errors import InvalidRequest

NONCE_TTL = 24 * 3600

# What apps above this one add to a key's page (metering: how much of each budget is used).
# Each provider takes the key and returns template context; they register in their ready().
_key_page_context: list[Callable[[ApiKey], dict]] = []


def register_key_page_context(provider: Callable[[ApiKey], dict]) -> None:
    if provider not in _key_page_context:
        _key_page_context.append(provider)


@dataclass(frozen=True)
class EventRow:
    event: ApiKeyEvent
    who: str
    ip: str


def _event_rows(membership, events: list[ApiKeyEvent]) -> list[EventRow]:
    owner = membership.user
    members = set(membership.org.memberships.values_list("user_id", flat=True))
    rows = []
    for event in events:
        if event.actor_id == owner.pk:
            who, ip = f"you ({owner.email})", event.ip or "—"
        elif event.actor is not None and event.actor_id in members:
            who, ip = event.actor.email, event.ip or "—"
        elif event.actor_id is not None:
            # An operator acted on the customer's key: say so, without exposing their details.
            who, ip = "Cortensor staff", "—"
        else:
            who, ip = event.actor_label or "—", event.ip or "—"
        rows.append(EventRow(event=event, who=who, ip=ip))
    return rows


def _claim_nonce(user, nonce: str) -> bool:
    return cache.add(f"apikeys:form-nonce:{user.pk}:{nonce}", 1, NONCE_TTL)


def _release_nonce(user, nonce: str) -> None:
    cache.delete(f"apikeys:form-nonce:{user.pk}:{nonce}")


def _page(
    request, *, form: ApiKeyCreateForm, created: tuple[ApiKey, str] | None = None, status: int = 200
):
    membership = acting_membership(request)
    context = {
        "org": membership.org,
        "membership": membership,
        "keys": list(apikey_list_for_member(membership=membership)),
        "events": _event_rows(membership, apikey_events_for_member(membership=membership)),
        "form": form,
        "created_key": created[0] if created else None,
        "created_secret": created[1] if created else None,
    }
    return render(request, "apikeys/keys.html", context, status=status)


# django-ratelimit guards the forms: a person creates a few keys, a script hammering the
# page is refused (429, portal.views.ratelimited).
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@ratelimit(key="user", rate="20/m", method="POST", block=True)
def keys_page(request):
    if request.method == "GET":
        return _page(request, form=ApiKeyCreateForm())
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _page(request, form=form, status=400)
    nonce = form.cleaned_data["nonce"]
    if not _claim_nonce(request.user, nonce):
        messages.info(
            request,
            "That form was already sent and its key created. A key's secret "
            "is shown only once; if you did not copy it, revoke the key and make a "
            "new one.",
        )
        return redirect("apikeys:keys")
    try:
        created = apikey_create(
            owner=request.user,
            org=acting_membership(request).org,
            name=form.cleaned_data["name"],
            expires_at=form.expires_at,
            allowed_models=list(form.cleaned_data.get("models") or ()),
            actor=request.user,
            ip=client_ip(request),
        )
    except InvalidRequest as exc:
        _release_nonce(request.user, nonce)
        field = exc.param if exc.param in form.fields else None
        form.add_error(field, exc.message)
        return _page(request, form=form, status=400)
    return _page(request, form=ApiKeyCreateForm(), created=created)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@ratelimit(key="user", rate="30/m", method="POST", block=True)
def key_revoke(request, key_id: int):
    key = apikey_get_for_member(membership=acting_membership(request), key_id=key_id)
    if key.revoked_at is not None:
        messages.info(request, f"The key “{key.name}” was already revoked.")
        return redirect("apikeys:keys")
    form = ApiKeyRevokeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        apikey_revoke(key=key, actor=request.user, ip=client_ip(request))
        messages.success(
            request,
            f"The key “{key.name}” ({key.display_prefix}) is revoked: "
            "requests using it are refused from now on.",
        )
        return redirect("apikeys:keys")
    status = 400 if form.is_bound else 200
    return render(request, "apikeys/revoke.html", {"key": key, "form": form}, status=status)


def _key_page(request, key: ApiKey, *, form: ApiKeyEditForm | None = None, status: int = 200):
    membership = acting_membership(request)
    context = {
        "key": key,
        "org": membership.org,
        "form": form or ApiKeyEditForm(key=key),
        "rotate_form": ApiKeyRotateForm(),
        "events": _event_rows(membership, apikey_events_for_key(key=key)),
    }
    for provider in _key_page_context:
        context.update(provider(key))
    return render(request, "apikeys/key.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@ratelimit(key="user", rate="30/m", method="POST", block=True)
def key_page(request, key_id: int):
    """A key's settings (the same use case as PATCH /api/keys/<id>), budgets and trail."""
    key = apikey_get_for_member(membership=acting_membership(request), key_id=key_id)
    if request.method == "GET":
        return _key_page(request, key)
    form = ApiKeyEditForm(request.POST, key=key)
    if key.revoked_at is not None:
        messages.info(request, "This key is revoked: its settings no longer matter.")
        return redirect("apikeys:key", key.pk)
    if not form.is_valid():
        return _key_page(request, key, form=form, status=400)
    try:
        apikey_update(key=key, actor=request.user, ip=client_ip(request), **form.changes())
    except InvalidRequest as exc:
        field = exc.param if exc.param in form.fields else None
        form.add_error(field, exc.message)
        return _key_page(request, key, form=form, status=400)
    messages.success(
        request, f"Saved. The key “{key.name}” uses these settings from its next request."
    )
    return redirect("apikeys:key", key.pk)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@ratelimit(key="user", rate="20/m", method="POST", block=True)
def key_rotate(request, key_id: int):
    """A new secret for the key (POST /api/keys/<id>/rotate's use case), shown once."""
    key = apikey_get_for_member(membership=acting_membership(request), key_id=key_id)
    form = ApiKeyRotateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = apikey_rotate(
                key=key,
                grace_seconds=form.cleaned_data["grace"],
                actor=request.user,
                ip=client_ip(request),
            )
        except InvalidRequest as exc:
            messages.error(request, exc.message)
            return redirect("apikeys:key", key.pk)
        response = render(request, "apikeys/rotated.html", {"key": key, "secret": secret})
        response["Cache-Control"] = "no-store"
        return response
    status = 400 if form.is_bound else 200
    return render(request, "apikeys/rotate.html", {"key": key, "form": form}, status=status)
