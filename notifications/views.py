"""The notification pages: the list (with mark-as-read), preferences, webhook endpoints and
their delivery logs, and the signed unsubscribe link (no login). Every object is looked up
within the user's own inbox or the current organization: another one's is a 404."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.selectors import acting_membership
from core.errors import ApiError
from notifications.forms import EmailPrefsForm, EndpointForm, ThresholdsForm
from notifications.models import Event
from notifications.selectors import (
    inbox_for,
    inbox_item_for,
    webhook_deliveries_for,
    webhook_endpoint_for,
    webhook_endpoints_for,
)
from notifications.services import (
    email_muted,
    email_prefs_set,
    inbox_mark_read,
    org_thresholds,
    org_thresholds_set,
    unsubscribe_apply,
    unsubscribe_read,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_enable,
    webhook_endpoint_rotate,
)


@never_cache
@login_required
@require_http_methods(["GET"])
def notification_list(request):
    return render(request, "notifications/list.html", {"items": inbox_for(user=request.user)})


@never_cache
@login_required
@require_http_methods(["GET"])
def notification_open(request, item_id: int):
    """Opening a notification marks it read."""
    item = inbox_item_for(user=request.user, item_id=item_id)
    if item.read_at is None:
        inbox_mark_read(user=request.user, item_ids=[item.pk])
    return render(request, "notifications/detail.html", {"item": item, "n": item.notification})


@never_cache
@login_required
@require_POST
def notification_mark_read(request, item_id: int | None = None):
    if item_id is not None:
        inbox_item_for(user=request.user, item_id=item_id)  # 404 for another's
    inbox_mark_read(user=request.user, item_ids=None if item_id is None else [item_id])
    return redirect("notifications:list")


def _settings_page(request, *, prefs_form=None, thresholds_form=None, status: int = 200):
    membership = acting_membership(request)
    muted = email_muted(user_id=request.user.pk)
    context = {
        "membership": membership,
        "can_manage": membership.allows(Role.ADMIN),
        "prefs_form": prefs_form
        or EmailPrefsForm(initial={"emailed": [e for e in Event.values if e not in muted]}),
        "thresholds_form": thresholds_form
        or ThresholdsForm(initial={"thresholds": org_thresholds(org_id=membership.org_id)}),
    }
    return render(request, "notifications/settings.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def notification_settings(request):
    if request.method == "GET":
        return _settings_page(request)
    form = EmailPrefsForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, prefs_form=form, status=400)
    emailed = set(form.cleaned_data["emailed"])
    email_prefs_set(user=request.user, muted=[e for e in Event.values if e not in emailed])
    messages.success(request, "Your email preferences are saved.")
    return redirect("notifications:settings")


@never_cache
@login_required
@require_POST
def notification_thresholds(request):
    membership = acting_membership(request)
    if not membership.allows(Role.ADMIN):
        raise Http404("No such page")
    form = ThresholdsForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, thresholds_form=form, status=400)
    org_thresholds_set(actor=membership, thresholds=form.cleaned_data["thresholds"])
    messages.success(request, "The organization's quota thresholds are saved.")
    return redirect("notifications:settings")


def _admin_membership(request):
    membership = acting_membership(request)
    if not membership.allows(Role.ADMIN):
        raise Http404("No such page")
    return membership


def _webhooks_page(request, *, form=None, secret=None, status: int = 200):
    membership = _admin_membership(request)
    context = {
        "membership": membership,
        "endpoints": webhook_endpoints_for(org=membership.org),
        "form": form or EndpointForm(),
        "secret": secret,
    }
    return render(request, "notifications/webhooks.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def webhooks(request):
    if request.method == "GET":
        return _webhooks_page(request)
    membership = _admin_membership(request)
    form = EndpointForm(request.POST)
    if not form.is_valid():
        return _webhooks_page(request, form=form, status=400)
    try:
        endpoint, secret = webhook_endpoint_create(
            actor=membership,
            url=form.cleaned_data["url"],
            description=form.cleaned_data["description"],
        )
    except ApiError as exc:
        form.add_error("url" if exc.param == "url" else None, exc.message)
        return _webhooks_page(request, form=form, status=exc.status)
    return _webhooks_page(request, secret={"endpoint": endpoint, "value": secret})


@never_cache
@login_required
@require_http_methods(["GET"])
def webhook_detail(request, endpoint_id: int):
    membership = _admin_membership(request)
    endpoint = webhook_endpoint_for(membership=membership, endpoint_id=endpoint_id)
    context = {"endpoint": endpoint, "deliveries": webhook_deliveries_for(endpoint=endpoint)}
    return render(request, "notifications/webhook.html", context)


@never_cache
@login_required
@require_POST
def webhook_action(request, endpoint_id: int, action: str):
    membership = _admin_membership(request)
    endpoint = webhook_endpoint_for(membership=membership, endpoint_id=endpoint_id)
    if action == "rotate":
        secret = webhook_endpoint_rotate(actor=membership, endpoint=endpoint)
        return _webhooks_page(request, secret={"endpoint": endpoint, "value": secret})
    if action == "enable":
        webhook_endpoint_enable(actor=membership, endpoint=endpoint)
        messages.success(request, f"{endpoint.url} is enabled again.")
    elif action == "delete":
        webhook_endpoint_delete(actor=membership, endpoint=endpoint)
        messages.success(request, f"{endpoint.url} is deleted.")
    else:
        raise Http404("No such action")
    return redirect("notifications:webhooks")


@csrf_exempt  # the signed token is the credential; mail clients POST here (RFC 8058)
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    """GET shows what the link does (scanners that fetch links change nothing); POST applies."""
    try:
        user, event = (
            unsubscribe_read(token) if request.method == "GET" else unsubscribe_apply(token=token)
        )
    except ApiError:
        return render(request, "notifications/unsubscribe.html", {"invalid": True}, status=400)
    context = {
        "email": user.email,
        "event_label": Event(event).label,
        "done": request.method == "POST",
        "token": token,
    }
    return render(request, "notifications/unsubscribe.html", context)
