"""One error vocabulary for the API: domain exceptions with stable codes, one public shape.

Everything under /v1/ (and the key management API) answers errors as OpenAI does:
`{"error": {"message", "type", "param", "code"}}`. Views raise ApiError subclasses; the DRF
exception handler and the /v1/ 404/500 handlers turn them, and Django's own errors, into it.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request_error"
    # What the usage record adds to the code, never shown to the caller: for a refusal, the
    # limit that bound ("p_rpm", "tpd", ...), which staff insights count per limit.
    record_detail = ""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    @property
    def record_code(self) -> str:
        """The usage record's error_code: the public code, and the detail after a colon."""
        return f"{self.code}:{self.record_detail}" if self.record_detail else self.code

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ApiError):
    pass


class InvalidApiKey(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(
        self,
        message: str = "Invalid API key. Create a key at /keys and send it as "
        "'Authorization: Bearer <key>'.",
        **kwargs,
    ):
        super().__init__(message, **kwargs)


class PermissionDeniedError(ApiError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(ApiError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamUnavailable(ApiError):
    status = 503
    type = "api_error"
    code = "upstream_unavailable"


class UpstreamTimeout(ApiError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class UpstreamError(ApiError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class ServiceUnavailable(ApiError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


def error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def to_api_error(exc: Exception) -> ApiError | None:
    """The public error for an exception, or None if it is a bug (a real 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, drf_exceptions.ParseError):
        return InvalidRequest(f"We could not parse the JSON body of your request: {exc.detail}")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return InvalidRequest(
            "Send the request body as JSON with 'Content-Type: application/json'.",
            code="unsupported_media_type",
        )
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        return InvalidApiKey()
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        not_allowed = InvalidRequest(str(exc.detail), code="method_not_allowed")
        not_allowed.status = 405
        return not_allowed
    if isinstance(exc, drf_exceptions.ValidationError):
        param, message = _first_validation_error(exc.detail)
        return InvalidRequest(message, param=param)
    from django_ratelimit.exceptions import Ratelimited

    if isinstance(exc, Ratelimited):
        return RateLimited(
            "Too many requests; wait a minute and retry.", headers={"Retry-After": "60"}
        )
    if isinstance(exc, Http404 | drf_exceptions.NotFound):
        return NotFound("Not found.")
    if isinstance(exc, PermissionDenied | drf_exceptions.PermissionDenied):
        return PermissionDeniedError(
            str(getattr(exc, "detail", "") or "Permission denied."), code="permission_denied"
        )
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge("The request body is larger than this API accepts.")
    if isinstance(exc, drf_exceptions.Throttled):
        return RateLimited(str(exc.detail))
    if isinstance(exc, drf_exceptions.APIException):
        err = ApiError(str(exc.detail), code=exc.default_code)
        err.status = exc.status_code
        return err
    return None


def _first_validation_error(detail, prefix: str | None = None) -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if prefix is None else f"{prefix}.{key}"
            if key == "non_field_errors":
                name = prefix
            return _first_validation_error(value, name)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], prefix)
    return prefix, (f"{prefix}: {detail}" if prefix else str(detail))


def api_exception_handler(exc, context):
    error = to_api_error(exc)
    if error is None:
        return None  # let DRF/Django raise it: a real bug, logged as a 500
    response = Response(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response
