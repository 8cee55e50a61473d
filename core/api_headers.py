"""What every /v1/ answer carries for browsers and the OpenAI SDKs, whichever app answered.

- CORS, as OpenAI and OpenRouter answer it: a browser app may call /v1/ from any origin with
  its own key (there are no cookies to steal: `Access-Control-Allow-Origin: *`, no
  credentials). A preflight (`OPTIONS`) is answered here, before authentication, so it never
  meets a 401. By path prefix (`/v1/`), so every API under it (chat, completions, models,
  messages) is covered; the pages and `/api/` stay same-origin.
- A Content-Length on every answer that is not a stream (the lean /v1/ stack has no
  CommonMiddleware to set it).
- The SDKs' retry signals: `openai-processing-ms` on every answer, `retry-after-ms` beside
  every `Retry-After`, and `x-should-retry: false` on a deterministic 4xx (a retry would get the
  same answer). A 429 says for itself whether waiting helps (metering.limits).
"""

from __future__ import annotations

import time

from django.http import HttpResponse

API_PREFIX = "/v1/"

ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "OpenAI-Organization",
    "OpenAI-Project",
    "OpenAI-Beta",
    "Idempotency-Key",
    # What the Stainless-generated SDKs (openai, anthropic) send from a browser.
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
_ALLOWED_LOWER = {name.lower() for name in ALLOWED_HEADERS}
EXPOSED_HEADERS = (
    "x-request-id",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
)
_EXPOSED = ", ".join(EXPOSED_HEADERS)
PREFLIGHT_MAX_AGE = 86400
# A retry can change these answers: timeout, conflict, rate limit (OpenAI's SDKs retry them).
_RETRYABLE_4XX = {408, 409, 429}


def _allowed_headers(requested: str) -> str:
    """The fixed list, plus any other `x-stainless-*` header the preflight asks for (newer SDKs
    add some): CORS has no wildcard by prefix."""
    extra = [
        name.strip()
        for name in requested.split(",")
        if name.strip().lower().startswith("x-stainless-")
        and name.strip().lower() not in _ALLOWED_LOWER
    ]
    return ", ".join((*ALLOWED_HEADERS, *extra))


class ApiHeadersMiddleware:
    """Right after the request id middleware, in both stacks (settings.MIDDLEWARE and
    settings.API_MIDDLEWARE): so the guard's refusals and the 401s carry these headers too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        started = time.monotonic()
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response["Access-Control-Allow-Headers"] = _allowed_headers(
                request.headers.get("Access-Control-Request-Headers", "")
            )
            response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
            response["Vary"] = "Origin"
        else:
            response = self.get_response(request)
        response["Access-Control-Allow-Origin"] = "*"
        response["Access-Control-Expose-Headers"] = _EXPOSED
        response["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        retry_after = response.get("Retry-After")
        if retry_after and retry_after.isdigit() and "retry-after-ms" not in response:
            response["retry-after-ms"] = str(int(retry_after) * 1000)
        status = response.status_code
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            response.setdefault("x-should-retry", "false")
        if not response.streaming and "Content-Length" not in response:
            # Without it gunicorn frames the body as chunks: three writes (headers, body, the
            # last chunk) and three wake-ups of the client instead of two.
            response["Content-Length"] = str(len(response.content))
        return response
