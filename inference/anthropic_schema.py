"""The OpenAPI description of Anthropic's Messages API face (/v1/messages, count_tokens).

Documentation only, like inference.schema: inference.anthropic_format validates. Errors here
are Anthropic's shape, `{"type": "error", "error": {"type", "message"}, "request_id"}`.
inference.schema imports the model and error shapes from here for GET /v1/models, which answers
Anthropic's shape to a request with an `anthropic-version` header (so this module does not
import it back).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers

from inference.validation import MAX_MESSAGES, MAX_STOP, MAX_STOP_CHARS

EXAMPLE_MODEL = "cortensor/llama-3.1-8b"
TEXT_BLOCK = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    "required": ["type", "text"],
}

_TAGS = ["v1 (Anthropic)"]


def _enum(*values: str, **kwargs) -> serializers.CharField:
    """A string field of fixed values, inline in the schema (no enum component: "type" and
    "role" enums of the same name but other values already exist on OpenAI's side)."""
    field = serializers.CharField(**kwargs)
    # drf-spectacular reads the annotation off a field instance too; its stubs say classes only.
    return extend_schema_field({"type": "string", "enum": list(values)})(field)  # type: ignore[type-var]


# --- errors -------------------------------------------------------------------------------------

_ERROR_TYPES = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
]


class AnthropicErrorDetailSerializer(serializers.Serializer):
    type = _enum(*_ERROR_TYPES)
    message = serializers.CharField()


class AnthropicErrorSerializer(serializers.Serializer):
    type = _enum("error")
    error = AnthropicErrorDetailSerializer()
    request_id = serializers.CharField(allow_null=True, help_text="Also the request-id header.")

    class Meta:
        ref_name = "AnthropicError"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(AnthropicErrorSerializer, description=description)


ERRORS = {
    400: _error("invalid_request_error: the body is malformed or a field is wrong (named)."),
    401: _error("authentication_error: a missing, invalid or revoked key."),
    404: _error("not_found_error: no such model for this key."),
    411: _error("invalid_request_error: a chunked body without a Content-Length."),
    413: _error("invalid_request_error: the body is over the size limit."),
    429: _error("rate_limit_error: a rate limit or quota; see retry-after."),
    431: _error("invalid_request_error: a request header too large."),
    502: _error("api_error: the model server failed."),
    503: _error("api_error: limits cannot be checked right now."),
    504: _error("api_error: the model server timed out."),
    529: _error("overloaded_error: no router of the model's pool can take the request."),
}

# --- requests -----------------------------------------------------------------------------------


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": TEXT_BLOCK}]})
class TextBlocksField(serializers.JSONField):
    pass


class AnthropicMessageSerializer(serializers.Serializer):
    role = _enum("user", "assistant")
    content = TextBlocksField(
        help_text="A string or a list of text blocks; image and document blocks are refused."
    )

    class Meta:
        ref_name = "AnthropicMessage"


class MetadataSerializer(serializers.Serializer):
    user_id = serializers.CharField(
        required=False, allow_null=True, max_length=256, help_text="Recorded with the usage."
    )


class _MessagesBodySerializer(serializers.Serializer):
    model = serializers.CharField(max_length=128, help_text="A model id from GET /v1/models.")
    messages = serializers.ListField(
        child=AnthropicMessageSerializer(), min_length=1, max_length=MAX_MESSAGES
    )
    system = TextBlocksField(required=False, help_text="A string or a list of text blocks.")


class MessageCreateRequestSerializer(_MessagesBodySerializer):
    max_tokens = serializers.IntegerField(
        min_value=1, max_value=1_000_000, help_text="Required; at most the model's maximum."
    )
    temperature = serializers.FloatField(required=False, min_value=0, max_value=1)
    top_p = serializers.FloatField(required=False, min_value=0, max_value=1)
    top_k = serializers.IntegerField(required=False, min_value=0, max_value=1_000_000)
    stop_sequences = serializers.ListField(
        child=serializers.CharField(max_length=MAX_STOP_CHARS, allow_blank=True),
        required=False,
        max_length=MAX_STOP,
    )
    stream = serializers.BooleanField(
        required=False, help_text="Answer as Anthropic's named server-sent events."
    )
    metadata = MetadataSerializer(required=False)

    class Meta:
        ref_name = "MessageCreateRequest"


class CountTokensRequestSerializer(_MessagesBodySerializer):
    class Meta:
        ref_name = "MessageCountTokensRequest"


# --- responses ----------------------------------------------------------------------------------


class TextBlockSerializer(serializers.Serializer):
    type = _enum("text")
    text = serializers.CharField(allow_blank=True)


class MessageUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class MessageSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = _enum("message")
    role = _enum("assistant")
    model = serializers.CharField()
    content = TextBlockSerializer(many=True)
    stop_reason = _enum("end_turn", "max_tokens", "stop_sequence")
    stop_sequence = serializers.CharField(allow_null=True)
    usage = MessageUsageSerializer()

    class Meta:
        ref_name = "Message"


class CountTokensSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()

    class Meta:
        ref_name = "MessageTokensCount"


# --- models, in Anthropic's shape (GET /v1/models with anthropic-version) -------------------------


class AnthropicModelSerializer(serializers.Serializer):
    type = _enum("model")
    id = serializers.CharField()
    display_name = serializers.CharField()
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "AnthropicModel"


class AnthropicModelListSerializer(serializers.Serializer):
    data = AnthropicModelSerializer(many=True)  # type: ignore[assignment] # Anthropic's "data"
    has_more = serializers.BooleanField()
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)

    class Meta:
        ref_name = "AnthropicModelList"


ANTHROPIC_VERSION = OpenApiParameter(
    "anthropic-version",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Sent by Anthropic's SDKs (any value): the answer, errors included, is then "
    "in Anthropic's shape.",
)


def either_shape(name: str, openai: serializers.Serializer, anthropic: serializers.Serializer):
    """OpenAI's shape, or Anthropic's when the request said `anthropic-version`."""
    return PolymorphicProxySerializer(
        component_name=name, serializers=[openai, anthropic], resource_type_field_name=None
    )


SSE = OpenApiResponse(
    {
        "type": "object",
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
        "required": ["data"],
    },
    description="With `stream: true`: message_start, content_block_start, ping, "
    "content_block_delta (text_delta)..., content_block_stop, message_delta, message_stop; a "
    "stream that breaks off ends with `event: error`.",
)

messages_create = extend_schema(
    operation_id="messages_create",
    tags=_TAGS,
    summary="Create a message (Anthropic's Messages API)",
    description="Anthropic's Messages API on the same keys, limits, routing and metering as "
    "chat completions. Authenticate with `x-api-key` or `Authorization: Bearer`; "
    "`anthropic-version` is accepted. Refused with 400: image and document blocks, `tools`, "
    "`tool_choice`, `thinking`.",
    request=MessageCreateRequestSerializer,
    responses={
        (200, "application/json"): MessageSerializer,
        (200, "text/event-stream"): SSE,
        **ERRORS,
    },
    examples=[
        OpenApiExample(
            "hello",
            request_only=True,
            value={
                "model": EXAMPLE_MODEL,
                "max_tokens": 16,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": "Say hi"}],
            },
        )
    ],
)
messages_count_tokens = extend_schema(
    operation_id="messages_count_tokens",
    tags=_TAGS,
    summary="Count a message's input tokens",
    description="The prompt's tokens as admission counts them (the model's chat template, "
    "then the portal's estimate). Nothing is generated or billed.",
    request=CountTokensRequestSerializer,
    responses={200: CountTokensSerializer, **ERRORS},
)
