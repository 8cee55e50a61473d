"""The OpenAPI description of /v1/ (served at /openapi.json by drf-spectacular).

Documentation only: the views validate with inference.validation, which is cheaper and words
its errors the way OpenAI does. These serializers mirror what it accepts and what the views
answer; tests/test_openapi.py and tests/test_schemathesis.py hold the two together.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers

from inference.anthropic_schema import (
    ANTHROPIC_VERSION,
    AnthropicErrorSerializer,
    AnthropicModelListSerializer,
    AnthropicModelSerializer,
    either_shape,
)
from inference.validation import MAX_MESSAGES, MAX_STOP, MAX_STOP_CHARS

EXAMPLE_MODEL = "cortensor/llama-3.1-8b"
MODEL_ID_PATTERN = r"^[A-Za-z0-9._:/-]{1,128}$"


class ApiKeyAuthScheme(OpenApiAuthenticationExtension):
    target_class = "apikeys.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ctsk_<12-character id>_<43-character secret>",
            "description": "An API key from /keys, sent as `Authorization: Bearer <key>` "
            "(what the OpenAI SDKs send as `api_key`).",
        }


# --- errors -----------------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What was wrong, for a human.")
    type = serializers.CharField(help_text="invalid_request_error, authentication_error, ...")
    param = serializers.CharField(allow_null=True, help_text="The parameter at fault, if one.")
    code = serializers.CharField(
        allow_null=True, help_text="Stable code: invalid_api_key, model_not_found, ..."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()

    class Meta:
        ref_name = "Error"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


AUTH_ERRORS = {
    401: _error("Missing or invalid API key (`invalid_api_key`)."),
    429: _error(
        "Too many requests with an invalid key from this address, or a rate limit or "
        "quota reached (`rate_limit_exceeded`, `insufficient_quota`); see Retry-After."
    ),
    431: _error("A request header, or all of them together, too large (`headers_too_large`)."),
}
BODY_ERRORS = {
    400: _error(
        "The body is not valid JSON, not an object, or a parameter is wrong; `param` names it."
    ),
    404: _error("The model does not exist or this key may not use it (`model_not_found`)."),
    411: _error("Chunked body without a Content-Length (`length_required`)."),
    413: _error("The body is over the size limit (`request_too_large`)."),
    502: _error("The model server failed (`upstream_error`)."),
    503: _error(
        "No capacity, or limits cannot be checked (`upstream_unavailable`, `service_unavailable`)."
    ),
    504: _error("The model server timed out (`upstream_timeout`)."),
}


# --- models -----------------------------------------------------------------------------------


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The id to send as `model`.")
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField(help_text="Unix time the model was added.")
    owned_by = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    context_length = serializers.IntegerField()
    max_output_tokens = serializers.IntegerField()


class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)  # type: ignore[assignment] # the OpenAI field "data"


# --- requests ---------------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "maxLength": MAX_STOP_CHARS},
            {
                "type": "array",
                "items": {"type": "string", "maxLength": MAX_STOP_CHARS},
                "maxItems": MAX_STOP,
            },
        ],
        "nullable": True,
    }
)
class StopField(serializers.JSONField):
    pass


TEXT_PART = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    "required": ["type", "text"],
}


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]})
class ContentField(serializers.JSONField):
    pass


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant"])
    content = ContentField(help_text="A string, or an array of text parts.")
    name = serializers.CharField(
        required=False,
        max_length=256,
        help_text="The participant's name, rendered where the model's chat template has a "
        "place for one; at most 256 characters, no control characters.",
    )

    class Meta:
        ref_name = "ChatMessage"


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = serializers.BooleanField(
        required=False, help_text="Send a last chunk with the usage (empty `choices`)."
    )


class ResponseFormatSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["text"])


def _optional_int(lo: int, hi: int, help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False, allow_null=True, min_value=lo, max_value=hi, help_text=help_text
    )


def _optional_number(lo: float, hi: float) -> serializers.FloatField:
    return serializers.FloatField(required=False, allow_null=True, min_value=lo, max_value=hi)


class _SamplingSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=128, help_text="A model id from GET /v1/models.")
    max_tokens = _optional_int(
        1, 1_000_000, "At most the model's `max_output_tokens`; default: the model's default."
    )
    temperature = _optional_number(0, 2)
    top_p = _optional_number(0, 1)
    stop = StopField(
        required=False,
        help_text=f"Up to {MAX_STOP} sequences of at most {MAX_STOP_CHARS} characters that end "
        "the answer.",
    )
    presence_penalty = _optional_number(-2, 2)
    frequency_penalty = _optional_number(-2, 2)
    seed = _optional_int(-(2**63), 2**63 - 1, "Accepted; routers may ignore it.")
    user = serializers.CharField(required=False, allow_null=True, max_length=256)
    n = _optional_int(1, 1, "Only 1.")
    stream = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="Answer as server-sent events ending in `data: [DONE]`.",
    )
    stream_options = StreamOptionsSerializer(
        required=False, allow_null=True, help_text="Only with `stream: true`."
    )


class ChatCompletionRequestSerializer(_SamplingSerializer):
    messages = serializers.ListField(
        child=ChatMessageSerializer(), min_length=1, max_length=MAX_MESSAGES
    )
    max_completion_tokens = _optional_int(1, 1_000_000, "Same as `max_tokens`; wins over it.")
    response_format = ResponseFormatSerializer(required=False, allow_null=True)

    class Meta:
        ref_name = "ChatCompletionRequest"


class CompletionRequestSerializer(_SamplingSerializer):
    prompt = serializers.CharField(allow_blank=True, help_text="One prompt (no batches).")
    echo = serializers.BooleanField(required=False, allow_null=True)
    best_of = _optional_int(1, 1, "Only 1.")

    class Meta:
        ref_name = "CompletionRequest"


# --- responses --------------------------------------------------------------------------------


class UsageCountsSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


_FINISH = ["stop", "length", "content_filter"]


class AssistantMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_blank=True)
    refusal = serializers.CharField(allow_null=True)


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = AssistantMessageSerializer()
    logprobs = serializers.JSONField(allow_null=True)
    finish_reason = serializers.ChoiceField(choices=_FINISH)


class ChatCompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["chat.completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    system_fingerprint = serializers.CharField(required=False)  # a string or absent
    choices = ChatChoiceSerializer(many=True)
    usage = UsageCountsSerializer()

    class Meta:
        ref_name = "ChatCompletion"


class CompletionChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    text = serializers.CharField(allow_blank=True)
    logprobs = serializers.JSONField(allow_null=True)
    finish_reason = serializers.ChoiceField(choices=_FINISH)


class CompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["text_completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    system_fingerprint = serializers.CharField(required=False)  # a string or absent
    choices = CompletionChoiceSerializer(many=True)
    usage = UsageCountsSerializer()

    class Meta:
        ref_name = "Completion"


# For text/event-stream the schema describes one event (what schemathesis checks each against).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "description": "A chunk as JSON, or `[DONE]` at the end."},
        "event": {"type": "string"},
    },
    "required": ["data"],
}
SSE = OpenApiResponse(
    SSE_EVENT,
    description="With `stream: true`: `data: <chunk JSON>` events, then `data: [DONE]`. A "
    "stream that breaks off ends with a chunk carrying `error` and no choices (so no "
    "finish_reason), then `[DONE]`.",
)


# --- usage --------------------------------------------------------------------------------------


class PeriodSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    tokens = serializers.IntegerField()


class LimitEntrySerializer(serializers.Serializer):
    limit = serializers.IntegerField(allow_null=True, help_text="null: unlimited.")
    used = serializers.IntegerField(allow_null=True)
    remaining = serializers.IntegerField(allow_null=True)
    reset_at = serializers.DateTimeField(allow_null=True)


class UsageKeyBudgetsSerializer(serializers.Serializer):
    """The key's own budgets against its own counters (limit null: no budget of that kind)."""

    requests_per_day = LimitEntrySerializer()
    tokens_per_day = LimitEntrySerializer()
    requests_per_month = LimitEntrySerializer()
    tokens_per_month = LimitEntrySerializer()


class UsageKeySerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The key's public id.")
    name = serializers.CharField(allow_null=True)
    today = PeriodSerializer()
    month = PeriodSerializer()
    budgets = UsageKeyBudgetsSerializer(
        help_text="This key's own day and month budgets; `limits` shows whichever binds."
    )


class UsageUserSerializer(serializers.Serializer):
    today = PeriodSerializer()
    month = PeriodSerializer()


class UsageOrganizationSerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True, help_text="The organization's slug.")
    name = serializers.CharField(allow_null=True)
    today = PeriodSerializer()
    month = PeriodSerializer()


class UsagePlanSerializer(serializers.Serializer):
    name = serializers.CharField()
    requests_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_minute = serializers.IntegerField(allow_null=True)
    requests_per_day = serializers.IntegerField(allow_null=True)
    tokens_per_day = serializers.IntegerField(allow_null=True)
    requests_per_month = serializers.IntegerField(allow_null=True)
    tokens_per_month = serializers.IntegerField(allow_null=True)
    max_concurrent_requests = serializers.IntegerField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["usage"])
    key = UsageKeySerializer()
    organization = UsageOrganizationSerializer(
        help_text="The organization that owns the key: its totals, all its keys together. "
        "The plan's limits apply to it as a whole."
    )
    user = UsageUserSerializer(help_text="Deprecated: the same as `organization`'s totals.")
    plan = UsagePlanSerializer(allow_null=True)
    limits = serializers.DictField(
        child=LimitEntrySerializer(), help_text="Each limit by name, as in the rate-limit headers."
    )

    class Meta:
        ref_name = "Usage"


# --- operations ---------------------------------------------------------------------------------

_TAGS = ["v1"]

# GET /v1/models[/{id}] answer Anthropic's shapes to an `anthropic-version` header.
_EITHER_ERROR = either_shape("AnyError", ErrorSerializer(), AnthropicErrorSerializer())
_MODELS_AUTH_ERRORS = {
    status: OpenApiResponse(_EITHER_ERROR, description=response.description)
    for status, response in AUTH_ERRORS.items()
}

models_list = extend_schema(
    operation_id="models_list",
    tags=_TAGS,
    summary="List the models this key may use",
    description="The catalog models this key's plan (and the key's own subset) allows; in "
    "Anthropic's shape to a request with an `anthropic-version` header.",
    parameters=[ANTHROPIC_VERSION],
    responses={
        200: either_shape("AnyModelList", ModelListSerializer(), AnthropicModelListSerializer()),
        **_MODELS_AUTH_ERRORS,
    },
)
models_retrieve = extend_schema(
    operation_id="models_retrieve",
    tags=_TAGS,
    summary="One model",
    description="One model by id, or 404 `model_not_found` if this key may not use it; in "
    "Anthropic's shape to a request with an `anthropic-version` header.",
    parameters=[
        ANTHROPIC_VERSION,
        OpenApiParameter(
            "model_id",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            pattern=MODEL_ID_PATTERN,
            description="A model id; it may contain '/'.",
            examples=[OpenApiExample("llama", value=EXAMPLE_MODEL)],
        ),
    ],
    responses={
        200: either_shape("AnyModel", ModelSerializer(), AnthropicModelSerializer()),
        404: OpenApiResponse(_EITHER_ERROR, description="No such model for this key."),
        **_MODELS_AUTH_ERRORS,
    },
)
chat_completions_create = extend_schema(
    operation_id="chat_completions_create",
    tags=_TAGS,
    summary="Chat completion",
    description="OpenAI's chat completion. Unknown fields are ignored; tools, images, audio, "
    "logprobs and n > 1 are refused with 400 `unsupported_parameter`.",
    request=ChatCompletionRequestSerializer,
    responses={
        (200, "application/json"): ChatCompletionSerializer,
        (200, "text/event-stream"): SSE,
        **BODY_ERRORS,
        **AUTH_ERRORS,
    },
    examples=[
        OpenApiExample(
            "hello",
            request_only=True,
            value={
                "model": EXAMPLE_MODEL,
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 16,
            },
        )
    ],
)
completions_create = extend_schema(
    operation_id="completions_create",
    tags=_TAGS,
    summary="Text completion (legacy)",
    description="OpenAI's legacy completion for one prompt string.",
    request=CompletionRequestSerializer,
    responses={
        (200, "application/json"): CompletionSerializer,
        (200, "text/event-stream"): SSE,
        **BODY_ERRORS,
        **AUTH_ERRORS,
    },
    examples=[
        OpenApiExample(
            "once upon",
            request_only=True,
            value={"model": EXAMPLE_MODEL, "prompt": "Once upon a time", "max_tokens": 16},
        )
    ],
)


class UsageApiSchema(OpenApiViewExtension):
    """inference.usage_api.UsageApi is documented here, with the rest of /v1/."""

    target_class = "inference.usage_api.UsageApi"

    def view_replacement(self):
        return extend_schema_view(
            get=extend_schema(
                operation_id="usage_retrieve",
                tags=_TAGS,
                summary="This key's usage and limits",
                description="Requests and tokens today and this month, for the key and its "
                "organization, the organization's plan, and every limit with what is left of "
                "it (the plan's limits are shared by all the organization's keys).",
                responses={
                    200: UsageSerializer,
                    503: _error("Service unavailable."),
                    **AUTH_ERRORS,
                },
            )
        )(type("UsageApi", (self.target_class,), {}))
