"""Portal pages about calling the API: the docs and the playground."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST, require_safe

from accounts.selectors import acting_membership
from apikeys.keyformat import KEY_PREFIX
from apikeys.models import ApiKey
from apikeys.services import PLAYGROUND_KEY_NAME
from catalog.selectors import catalog_enabled_models
from inference.playground import playground_chat_serve, playground_models

KEY_ENV = "$CORTENSOR_API_KEY"


def _newest_key_prefix(user) -> str | None:
    """The public prefix of the user's newest active key of their own (not the playground's,
    whose secret they never saw)."""
    public_id = (
        ApiKey.objects.for_owner(user)
        .active()
        .exclude(playground=True)
        .order_by("-created_at")
        .values_list("public_id", flat=True)
        .first()
    )
    return f"{KEY_PREFIX}{public_id}_…" if public_id else None


@require_safe
def docs_page(request):
    models = catalog_enabled_models()
    key_prefix = _newest_key_prefix(request.user) if request.user.is_authenticated else None
    return render(
        request,
        "inference/docs.html",
        {
            "base_url": request.build_absolute_uri("/v1"),
            "site_url": request.build_absolute_uri("/").rstrip("/"),
            "key_prefix": key_prefix,
            "key_value": key_prefix or "paste-your-key-here",
            "example_model": models[0].public_id if models else "MODEL_ID",
            "models": models,
        },
    )


@require_safe
@login_required
@ensure_csrf_cookie
def playground_page(request):
    models = playground_models(org=acting_membership(request).org)
    return render(
        request,
        "inference/playground.html",
        {
            "models": models,
            "key_name": PLAYGROUND_KEY_NAME,
            # For "View code": this server's API and the user's own newest key, by prefix.
            "base_url": request.build_absolute_uri("/v1"),
            "key_prefix": _newest_key_prefix(request.user) or KEY_ENV,
        },
    )


@never_cache
@require_POST
def playground_chat(request):
    # Session auth, so Django's CSRF middleware checks the X-CSRFToken header; login is
    # checked inside, answering 401 JSON rather than redirecting a fetch() to a login page.
    return playground_chat_serve(request)
