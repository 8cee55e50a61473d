"""Refuse malformed HTTP at the door of the JSON APIs, in the OpenAI error shape (Anthropic's
for /v1/messages: core.anthropic_errors).

Django reads a body lazily and only `request.body` enforces DATA_UPLOAD_MAX_MEMORY_SIZE; DRF
reads the stream itself, so without this an oversized body would be read whole. Here, before
any view, authentication or body read, a request to /v1/ or /api/ is refused when:

- its Host is not in ALLOWED_HOSTS (the page stack's
  CommonMiddleware checks it; the lean /v1/ stack has none)     400 invalid_host
- its Content-Length is not a non-negative integer             400 invalid_content_length
- its body is chunked (no Content-Length): Django's WSGI
  handler would silently see an empty body                      411 length_required
- its Content-Length is over DATA_UPLOAD_MAX_MEMORY_SIZE        413 request_too_large
- one header is over API_MAX_HEADER_BYTES or all of them
  together over API_MAX_HEADERS_TOTAL_BYTES                     431 headers_too_large

Requests refused here are not metered: nothing was read, nobody was authenticated.

`JSONParser` is DRF's parser with one more refusal: JSON nested deeper than Python's recursion
limit raises RecursionError inside `json.loads`, which DRF does not catch (a 500); here it is a
400 like any other unparsable body.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from core.anthropic_errors import api_error_response
from core.errors import ApiError, InvalidRequest, PayloadTooLarge

API_PREFIXES = ("/v1/", "/api/")


def _refusal(status: int, message: str, code: str) -> ApiError:
    error = InvalidRequest(message, code=code)
    error.status = status
    return error


def check_host(request) -> ApiError | None:
    """Django validates Host only when something asks for it (CommonMiddleware, CSRF, an
    absolute URL): on /v1/ nothing would, and a request for any Host would be served."""
    try:
        request.get_host()
    except DisallowedHost:
        return _refusal(
            400, "The Host header names a host this server does not serve.", "invalid_host"
        )
    return None


def check_request(environ: dict) -> ApiError | None:
    """The error for a request that must not reach a view, or None."""
    one_limit = settings.API_MAX_HEADER_BYTES
    total_limit = settings.API_MAX_HEADERS_TOTAL_BYTES
    total = 0
    for name, value in environ.items():
        if not name.startswith("HTTP_") or not isinstance(value, str):
            continue
        size = len(name) + len(value)
        total += size
        if size > one_limit:
            header = name[5:].replace("_", "-").title()
            return _refusal(
                431,
                f"The {header} header is {len(value)} bytes; this API accepts "
                f"at most {one_limit} per header.",
                "headers_too_large",
            )
    if total > total_limit:
        return _refusal(
            431,
            f"The request headers are {total} bytes together; this API accepts "
            f"at most {total_limit}.",
            "headers_too_large",
        )

    raw_length = environ.get("CONTENT_LENGTH") or ""
    if raw_length.strip():
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            return _refusal(
                400,
                "The Content-Length header is not a valid byte count.",
                "invalid_content_length",
            )
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            return PayloadTooLarge(
                f"The request body is {length} bytes; this API accepts at most {limit}."
            )
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return _refusal(
            411,
            "Send the request body with a Content-Length header (chunked "
            "transfer encoding is not supported).",
            "length_required",
        )
    return None


class ApiGuardMiddleware:
    """Put right after SecurityMiddleware: before sessions, CSRF and any body read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(API_PREFIXES):
            error = check_host(request) or check_request(request.META)
            if error is not None:
                return api_error_response(request, error)
        return self.get_response(request)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
