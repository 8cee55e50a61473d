"""DRF authentication for /v1/: `Authorization: Bearer <key>` (what the OpenAI SDKs send)."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication

from apikeys.services import apikey_authenticate
from portal.errors import InvalidApiKey


def client_ip(request) -> str | None:
    # Behind a proxy, gunicorn's forwarded_allow_ips + the proxy's header give REMOTE_ADDR.
    return request.META.get("REMOTE_ADDR")


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise InvalidApiKey()
        principal = apikey_authenticate(raw_key=raw.strip(), ip=client_ip(request))
        return principal, principal

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
