"""Anthropic's Messages API as a second face of the completion pipeline.

A `/v1/messages` body is validated into the same CompletionRequest a chat completion becomes
(`system` as the first system turn, then the `messages`), so the chat template, admission,
routing, failover, relay and metering are the chat completion's own; only the way in (this
parser) and the way out (the message body, the named SSE events, errors in Anthropic's shape:
core.anthropic_errors) differ. Routers take text only: image and document blocks, tools and
extended thinking are refused with a 400 that names the field rather than silently dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.http import JsonResponse

from catalog.routing import ModelInfo
from core import anthropic_errors
from core.errors import ApiError, InvalidRequest, UpstreamError, UpstreamTimeout
from inference.chat_templates.base import ChatMessage
from inference.relay import Relay
from inference.validation import (
    MAX_MESSAGES,
    MAX_STOP,
    MAX_STOP_CHARS,
    CompletionRequest,
    Sampling,
    _boolean,
    _integer,
    _model,
    _number,
    _require_object,
)

ENDPOINT = "messages"
MAX_USER_ID = 256
_ROLES = ("user", "assistant")
# Fields the routers cannot serve: refused by name (an empty value is no request for them).
_REFUSED_FIELDS = {
    "tools": "Tool use is not supported by this API: routers take text only.",
    "tool_choice": "Tool use is not supported by this API: routers take text only.",
    "thinking": "Extended thinking is not supported by this API.",
}
_BLOCK_REFUSALS = {
    "image": "Image blocks are not supported: routers take text only.",
    "document": "Document blocks are not supported: routers take text only.",
}


# --- the request ------------------------------------------------------------------------------


def _text_blocks(value: Any, param: str) -> str:
    """A string, or a list of text blocks joined (Anthropic's `content` and `system`)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{param}: must be a string or a list of content blocks.", param=param)
    texts = []
    for index, block in enumerate(value):
        where = f"{param}.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str):
            raise InvalidRequest(
                f"{where}: each content block must be an object with a 'type'.", param=where
            )
        if kind != "text":
            message = _BLOCK_REFUSALS.get(
                kind, f"Content blocks of type '{kind[:40]}' are not supported; only 'text'."
            )
            raise InvalidRequest(f"{where}.type: {message}", param=f"{where}.type")
        text = block.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.text: a text block needs a string 'text'.", param=where)
        texts.append(text)
    return "".join(texts)


def _messages(body: dict, system: str | None) -> list[ChatMessage]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("messages: Field required.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty list of messages.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(
            f"messages: {len(messages)} messages; at most {MAX_MESSAGES}.", param="messages"
        )
    result = [ChatMessage("system", system)] if system else []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"{where}: each message must be an object with 'role' and 'content'.", param=where
            )
        role = message.get("role")
        if role not in _ROLES:
            hint = " (put system prompts in the top-level 'system')" if role == "system" else ""
            raise InvalidRequest(
                f"{where}.role: must be 'user' or 'assistant'{hint}.", param=f"{where}.role"
            )
        if "content" not in message or message["content"] is None:
            raise InvalidRequest(f"{where}.content: Field required.", param=f"{where}.content")
        result.append(ChatMessage(role, _text_blocks(message["content"], f"{where}.content")))
    return result


def _stop_sequences(body: dict) -> list[str]:
    stops = body.get("stop_sequences")
    if stops is None:
        return []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("stop_sequences: must be a list of strings.", param="stop_sequences")
    if len(stops) > MAX_STOP:
        raise InvalidRequest(
            f"stop_sequences: at most {MAX_STOP} sequences.", param="stop_sequences"
        )
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise InvalidRequest(
            f"stop_sequences: each sequence may be at most {MAX_STOP_CHARS} characters long.",
            param="stop_sequences",
        )
    return [s for s in stops if s]


def _user_id(body: dict) -> str | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata: must be an object.", param="metadata")
    user_id = metadata.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > MAX_USER_ID):
        raise InvalidRequest(
            f"metadata.user_id: must be a string of at most {MAX_USER_ID} characters.",
            param="metadata.user_id",
        )
    return user_id or None


def parse_messages(body: Any, *, count_only: bool = False) -> CompletionRequest:
    """A Messages API body as the pipeline's request; `count_only` (count_tokens) needs no
    max_tokens and ignores sampling. Raises InvalidRequest naming the field."""
    body = _require_object(body)
    for name, message in _REFUSED_FIELDS.items():
        if body.get(name) not in (None, [], {}):
            raise InvalidRequest(f"{name}: {message}", param=name, code="unsupported_parameter")
    model = _model(body)
    system = body.get("system")
    system_text = None if system is None else _text_blocks(system, "system")
    messages = _messages(body, system_text)
    if count_only:
        return CompletionRequest(
            model=model, endpoint=ENDPOINT, messages=messages, prompt=None, sampling=Sampling()
        )
    if body.get("max_tokens") is None:
        raise InvalidRequest("max_tokens: Field required.", param="max_tokens")
    sampling = Sampling(
        max_tokens=_integer(body, "max_tokens", 1, 1_000_000),
        temperature=_number(body, "temperature", 0, 1),
        top_p=_number(body, "top_p", 0, 1),
        stop=_stop_sequences(body),
        top_k=_integer(body, "top_k", 0, 1_000_000),  # forwarded to the router, as chat's
        user=_user_id(body),  # metadata.user_id: whom the caller serves, as OpenAI's `user`
    )
    return CompletionRequest(
        model=model,
        endpoint=ENDPOINT,
        messages=messages,
        prompt=None,
        sampling=sampling,
        stream=_boolean(body, "stream"),
    )


# --- the answer --------------------------------------------------------------------------------


def stop_reason(relay: Relay, router_finish: str | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for what the relay delivered."""
    if relay.stopped:
        return "stop_sequence", relay.scanner.matched
    if relay.finish_reason(router_finish) == "length":
        return "max_tokens", None
    return "end_turn", None


def message_body(
    *,
    ident: str,
    model: str,
    text: str,
    relay: Relay,
    router_finish: str | None,
    input_tokens: int,
    output_tokens: int,
) -> dict:
    reason, sequence = stop_reason(relay, router_finish)
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


# One encoder for every event: json.dumps with separators builds a new one for each call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _event(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {_COMPACT.encode(payload)}\n\n".encode()


def _text_delta(text: str) -> dict:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }


# A text delta is most of a stream: its bytes around the text, built once (the same bytes
# _event would make, without a dict and an encoder run per token). The text is the event's
# last string, so its marker is the last one found.
_DELTA_PREFIX, _DELTA_SUFFIX = _event("content_block_delta", _text_delta("\x00")).rsplit(
    json.dumps("\x00").encode(), 1
)


class EventWriter:
    """Encodes one stream's named SSE events, in Anthropic's order: message_start,
    content_block_start, ping, content_block_delta..., content_block_stop, message_delta,
    message_stop (or an `error` event when the stream breaks)."""

    def __init__(self, *, ident: str, model: str, request_id: str):
        self.ident = ident
        self.model = model
        self.request_id = request_id

    def open(self, *, input_tokens: int) -> bytes:
        message: dict[str, Any] = {
            "id": self.ident,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return (
            _event("message_start", {"type": "message_start", "message": message})
            + _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            + self.keep_alive()
        )

    def content(self, text: str) -> bytes:
        return _DELTA_PREFIX + json.dumps(text).encode() + _DELTA_SUFFIX

    def finish(
        self, *, relay: Relay, router_finish: str | None, input_tokens: int, output_tokens: int
    ) -> bytes:
        reason, sequence = stop_reason(relay, router_finish)
        return _event("content_block_stop", {"type": "content_block_stop", "index": 0}) + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                # Cumulative, as Anthropic sends them: the billed counts, input included.
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
        )

    @staticmethod
    def done() -> bytes:
        return _event("message_stop", {"type": "message_stop"})

    def cut(self, *, message: str, code: str) -> bytes:
        error: ApiError = (
            UpstreamTimeout(message) if code == "upstream_timeout" else UpstreamError(message)
        )
        return anthropic_errors.sse_error(error, request_id=self.request_id)

    @staticmethod
    def keep_alive() -> bytes:
        return _event("ping", {"type": "ping"})


# --- models ------------------------------------------------------------------------------------


def model_object(model: ModelInfo) -> dict[str, Any]:
    created = datetime.fromtimestamp(model.created, tz=UTC)
    return {
        "type": "model",
        "id": model.public_id,
        "display_name": model.display_name or model.public_id,
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


def models_page(models: list[ModelInfo]) -> JsonResponse:
    data = [model_object(m) for m in models]
    return JsonResponse(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )
