"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase, JsonResponse
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from apikeys.authentication import ApiKeyAuthentication
from apikeys.services import KeyPrincipal
from catalog.routing import ModelInfo, routing_table
from core.anthropic_errors import wants_anthropic
from core.api_guard import JSONParser
from inference import anthropic_format, schema, validation
from inference.services import completion_serve, resolve_model
from metering.limits import limits_headers


class AnyAccept(DefaultContentNegotiation):
    """/v1/ answers JSON or SSE whatever the Accept header says (curl users send
    `Accept: text/event-stream` for streams; OpenAI does not refuse them with a 406)."""

    def select_renderer(
        self, request: Request, renderers: Any, format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class V1View(APIView):
    """Every /v1/ view: API-key auth, no session/CSRF, errors in OpenAI's shape."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []
    throttle_classes: list = []
    parser_classes = [JSONParser]
    content_negotiation_class = AnyAccept

    # DRF makes a new authenticator, parser, renderer and negotiator for every request and
    # joins the Allow header from the handler methods: all stateless, fixed per view class.
    _authenticators: tuple[BaseAuthentication, ...]
    _parsers: tuple[BaseParser, ...]
    _renderers: tuple[BaseRenderer, ...]
    _negotiator: BaseContentNegotiation
    _response_headers: dict[str, str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._authenticators = tuple(c() for c in cls.authentication_classes)
        cls._parsers = tuple(c() for c in cls.parser_classes)
        cls._renderers = tuple(c() for c in cls.renderer_classes)
        cls._negotiator = cls.content_negotiation_class()
        cls._response_headers = None

    def get_authenticators(self) -> tuple[BaseAuthentication, ...]:  # type: ignore[override]
        return self._authenticators

    def get_parsers(self) -> tuple[BaseParser, ...]:  # type: ignore[override]
        return self._parsers

    def get_renderers(self) -> tuple[BaseRenderer, ...]:  # type: ignore[override]
        return self._renderers

    def get_content_negotiator(self) -> BaseContentNegotiation:
        return self._negotiator

    @property
    def default_response_headers(self) -> dict[str, str]:
        cls = type(self)
        if cls._response_headers is None:  # Allow counts HEAD, which View.setup adds to GET
            cls._response_headers = super().default_response_headers
        return dict(cls._response_headers)  # finalize_response pops Vary from it

    def finalize_response(  # type: ignore[override] # JSON and SSE answers are not DRF's
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        # OpenAI's x-ratelimit-* headers on every answer to a known key, not only on the
        # completions that went through admission (those carry them already).
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[arg-type]
        principal = getattr(request, "_user", None)
        if (
            isinstance(principal, KeyPrincipal)
            and response.status_code < 500  # e.g. limits unreachable: don't ask them again
            and "x-ratelimit-limit-requests" not in response
        ):
            plan = routing_table().plan_for(principal.plan_id)
            for name, value in limits_headers(principal=principal, plan=plan).items():
                response[name] = value
        return response


def model_object(model: ModelInfo) -> dict[str, Any]:
    return {
        "id": model.public_id,
        "object": "model",
        "created": model.created,
        "owned_by": "cortensor",
        "name": model.display_name,
        "description": model.description,
        "context_length": model.context_length,
        "max_output_tokens": model.max_tokens,
    }


class ModelListView(V1View):
    @schema.models_list
    def get(self, request: Request) -> JsonResponse:
        principal: KeyPrincipal = request.user  # type: ignore[assignment] # ApiKeyAuthentication
        table = routing_table()
        plan = table.plan_for(principal.plan_id)
        models = [
            m
            for m in table.models.values()
            if table.model_allowed(m, plan, principal.allowed_models)
        ]
        if wants_anthropic(request.path, request.META):  # an Anthropic SDK asks
            return anthropic_format.models_page(models)
        return JsonResponse({"object": "list", "data": [model_object(m) for m in models]})


class ModelDetailView(V1View):
    @schema.models_retrieve
    def get(self, request: Request, model_id: str) -> JsonResponse:
        model, _ = resolve_model(request.user, model_id)  # type: ignore[arg-type]
        if wants_anthropic(request.path, request.META):
            return JsonResponse(anthropic_format.model_object(model))
        return JsonResponse(model_object(model))


class ChatCompletionsView(V1View):
    @schema.chat_completions_create
    def post(self, request: Request) -> HttpResponseBase:
        return completion_serve(
            request_id=request._request.request_id,  # type: ignore[attr-defined] # middleware
            principal=request.user,  # type: ignore[arg-type] # ApiKeyAuthentication's
            creq_parse=validation.parse_chat,
            body_getter=lambda: request.data,
            client_socket=request._request.META.get("gunicorn.socket"),
        )


class CompletionsView(V1View):
    @schema.completions_create
    def post(self, request: Request) -> HttpResponseBase:
        return completion_serve(
            request_id=request._request.request_id,  # type: ignore[attr-defined] # middleware
            principal=request.user,  # type: ignore[arg-type] # ApiKeyAuthentication's
            creq_parse=validation.parse_completion,
            body_getter=lambda: request.data,
            client_socket=request._request.META.get("gunicorn.socket"),
        )
