"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens.

The same keys, limits, routing, failover and metering as /v1/chat/completions: the message
is served by `completion_serve` with Anthropic's face (inference.faces); errors, including
DRF's own (a bad key, a malformed body), come out in Anthropic's shape
(core.anthropic_errors, chosen by the path).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase, JsonResponse
from rest_framework.request import Request

from core import anthropic_errors
from inference import anthropic_schema
from inference.anthropic_format import parse_messages
from inference.faces import ANTHROPIC
from inference.services import completion_serve, count_prompt_tokens
from inference.views import V1View


class AnthropicView(V1View):
    def finalize_response(  # type: ignore[override] # as V1View's
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)
        if "anthropic-ratelimit-requests-limit" not in response:
            limits = {k: v for k, v in response.items() if k.startswith("x-ratelimit-")}
            for name, value in anthropic_errors.anthropic_headers(limits).items():
                response[name] = value
        return response


class MessagesView(AnthropicView):
    @anthropic_schema.messages_create
    def post(self, request: Request) -> HttpResponseBase:
        return completion_serve(
            request_id=request._request.request_id,  # type: ignore[attr-defined] # middleware
            principal=request.user,  # type: ignore[arg-type] # ApiKeyAuthentication's
            face=ANTHROPIC,
            body_getter=lambda: request.data,
            client_socket=request._request.META.get("gunicorn.socket"),
        )


class CountTokensView(AnthropicView):
    @anthropic_schema.messages_count_tokens
    def post(self, request: Request) -> JsonResponse:
        creq = parse_messages(request.data, count_only=True)
        tokens = count_prompt_tokens(principal=request.user, creq=creq)  # type: ignore[arg-type]
        return JsonResponse({"input_tokens": tokens})
