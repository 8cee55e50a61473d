"""Give every request an id, echo it as `x-request-id`, and make it available to logs.

The id is always made here, never taken from the caller: it is the idempotency key of the
usage record, so a client re-sending an id must not be able to merge two requests into one.
"""

from __future__ import annotations

import secrets

from core.anthropic_errors import wants_anthropic
from core.request_context import set_request_id


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = new_request_id()
        request.request_id = request_id
        set_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            set_request_id(None)
        response["x-request-id"] = request_id
        if wants_anthropic(request.path, request.META):
            response["request-id"] = request_id  # where Anthropic's SDKs read it
        return response
