"""The same errors in Anthropic's shape, for the Messages API's face of /v1/.

One error vocabulary (core.errors) and two renderings of it: OpenAI's
`{"error": {"message", "type", "param", "code"}}` everywhere, and for a request to
`/v1/messages` (or one under /v1/ that says `anthropic-version`, except OpenAI's completion
routes) Anthropic's `{"type": "error", "error": {"type", "message"}, "request_id"}`, with the
status and type Anthropic uses and its `anthropic-ratelimit-*` headers beside OpenAI's.

Every renderer that answers /v1/ (the views, the DRF exception handler, the request guard, the
404/400/403 handlers) asks `wants_anthropic` which one to use.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from django.http import HttpRequest, JsonResponse
from rest_framework.response import Response

from core import errors
from core.errors import ApiError

MESSAGES_PREFIX = "/v1/messages"
# An SDK of either kind may send anthropic-version; on OpenAI's own routes it changes nothing.
_OPENAI_ONLY = ("/v1/chat/", "/v1/completions")

# Anthropic's error types by status; the portal's status is kept except where Anthropic has
# its own (a pool with no router able to take the request is "overloaded", 529).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
OVERLOADED_STATUS = 529


def wants_anthropic(path: str, meta: dict) -> bool:
    """Whether an answer to this request (path, WSGI environ or request.META) is Anthropic's."""
    if path.startswith(MESSAGES_PREFIX):
        return True
    return (
        "HTTP_ANTHROPIC_VERSION" in meta
        and path.startswith("/v1/")
        and not path.startswith(_OPENAI_ONLY)
    )


def status_and_type(error: ApiError) -> tuple[int, str]:
    if error.code == "upstream_unavailable":
        return OVERLOADED_STATUS, "overloaded_error"
    if error.status >= 500:
        return error.status, "api_error"
    return error.status, _TYPE_BY_STATUS.get(error.status, "invalid_request_error")


def error_body(error: ApiError, *, request_id: str | None) -> dict:
    _, kind = status_and_type(error)
    return {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": request_id,
    }


def error_response(error: ApiError, *, request_id: str | None) -> JsonResponse:
    status, _ = status_and_type(error)
    response = JsonResponse(error_body(error, request_id=request_id), status=status)
    for name, value in anthropic_headers(error.headers).items():
        response[name] = value
    return response


def api_error_response(request: HttpRequest, error: ApiError) -> JsonResponse:
    """An error for a /v1/ or /api/ request, in the shape that request expects."""
    if wants_anthropic(request.path, request.META):
        return error_response(error, request_id=getattr(request, "request_id", None))
    return errors.error_response(error)


def api_exception_handler(exc, context):
    """DRF's exception handler (settings.REST_FRAMEWORK): core.errors' unless the request
    is for the Anthropic face."""
    request = context.get("request")
    if request is None or not wants_anthropic(request.path, request.META):
        return errors.api_exception_handler(exc, context)
    error = errors.to_api_error(exc)
    if error is None:
        return None  # a real bug: a 500, as core.errors does
    status, _ = status_and_type(error)
    body = error_body(error, request_id=getattr(request, "request_id", None))
    response = Response(body, status=status)
    for name, value in anthropic_headers(error.headers).items():
        response[name] = value
    return response


def sse_error(error: ApiError, *, request_id: str | None) -> bytes:
    """The `event: error` that ends a stream broken after its first byte."""
    data = json.dumps(error_body(error, request_id=request_id), separators=(",", ":"))
    return f"event: error\ndata: {data}\n\n".encode()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _reset_at(duration: str, now: datetime) -> str | None:
    """OpenAI's reset duration ('20ms', '6m0s') as the RFC 3339 time Anthropic gives."""
    parts = _DURATION.findall(duration)
    if not parts:
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    return (
        (now + timedelta(seconds=seconds)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    )


def anthropic_headers(headers: dict[str, str]) -> dict[str, str]:
    """`headers` (OpenAI's x-ratelimit-*, Retry-After, ...) with Anthropic's rate-limit
    headers added: anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}."""
    out = dict(headers)
    now = datetime.now(UTC)
    for kind in ("requests", "tokens"):
        for what in ("limit", "remaining"):
            value = headers.get(f"x-ratelimit-{what}-{kind}")
            if value is not None:
                out[f"anthropic-ratelimit-{kind}-{what}"] = value
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        at = _reset_at(reset, now) if reset else None
        if at is not None:
            out[f"anthropic-ratelimit-{kind}-reset"] = at
    return out
