"""Process-level endpoints (health, readiness) and error pages that speak JSON under /v1/."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from catalog.selectors import routing_readiness
from core.anthropic_errors import api_error_response
from core.errors import (
    ApiError,
    InvalidRequest,
    NotFound,
    RateLimited,
    error_response,
    to_api_error,
)
from core.redis import redis_ping

log = logging.getLogger(__name__)


def _is_api(request) -> bool:
    return request.path.startswith(("/v1/", "/api/"))


@require_safe
def static_redirect(request, name: str):
    """/favicon.ico and friends: to the static file, resolved per request (the manifest
    storage knows the hashed name only after collectstatic)."""
    return HttpResponsePermanentRedirect(static(name))


def not_found(request, exception=None):
    if _is_api(request):
        return api_error_response(
            request, NotFound(f"No route {request.method} {request.path}. See /docs.")
        )
    return render(request, "404.html", status=404)


def bad_request(request, exception=None):
    if _is_api(request):
        # Django routes RequestDataTooBig (raised on reading request.body) here as a 400.
        error = to_api_error(exception) if isinstance(exception, RequestDataTooBig) else None
        return api_error_response(
            request,
            error
            or InvalidRequest(
                "The request was malformed (bad host, headers or encoding).", code="bad_request"
            ),
        )
    return render(request, "400.html", status=400)


def permission_denied(request, exception=None):
    from django_ratelimit.exceptions import Ratelimited

    if isinstance(exception, Ratelimited):
        return ratelimited(request, exception)
    if _is_api(request):
        err = ApiError("You may not access this resource.", code="permission_denied")
        err.status, err.type = 403, "permission_error"
        return api_error_response(request, err)
    return render(request, "403.html", status=403)


def ratelimited(request, exception=None):
    """django-ratelimit's refusals (portal forms, playground): 429, not its default 403."""
    if _is_api(request) or request.headers.get("Accept", "").startswith("application/json"):
        return error_response(
            RateLimited(
                "Too many requests; wait a minute and retry.", headers={"Retry-After": "60"}
            )
        )
    response = render(request, "429.html", status=429)
    response["Retry-After"] = "60"
    return response


def server_error(request):
    if _is_api(request):
        err = ApiError(
            "The portal failed to handle this request; it has been logged. "
            "Retry, and quote the x-request-id if it persists.",
            code="internal_error",
        )
        err.status = 500
        err.type = "api_error"
        return api_error_response(request, err)
    return render(request, "500.html", status=500)


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readyz: database check failed: %s", exc.__class__.__name__)
        checks["database"] = "error"
    checks["redis"] = redis_ping()
    checks["routers"] = routing_readiness()
    ready = all(value in {"ok", "disabled"} for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
