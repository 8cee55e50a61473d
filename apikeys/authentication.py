"""DRF authentication for /v1/: `Authorization: Bearer <key>` (what the OpenAI SDKs send, and
Anthropic's with `auth_token`) or `x-api-key: <key>` (Anthropic's SDKs with `api_key`)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from apikeys.services import KeyPrincipal, apikey_authenticate
from core.errors import InvalidApiKey


def client_ip(request: HttpRequest | Request) -> str | None:
    """The client's address for throttles: behind TRUSTED_PROXY_COUNT proxies, the address the
    outermost trusted proxy saw (X-Forwarded-For, counted from the right, so a client cannot
    choose it); otherwise REMOTE_ADDR."""
    count = settings.TRUSTED_PROXY_COUNT
    if count:
        hops = [
            h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()
        ]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR")


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[KeyPrincipal, KeyPrincipal]:
        raw = request.META.get("HTTP_X_API_KEY", "")
        if not raw.strip():
            header = request.META.get("HTTP_AUTHORIZATION", "")
            scheme, _, raw = header.partition(" ")
            if scheme.lower() != "bearer" or not raw.strip():
                raise InvalidApiKey()
        principal = apikey_authenticate(raw_key=raw.strip(), ip=client_ip(request))
        return principal, principal

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
