"""The public shapes of the one completion pipeline: OpenAI's and Anthropic's.

A face parses a body into the pipeline's CompletionRequest and renders what the pipeline
produced (an answer, a stream's events, an error, the limit headers) in its API's shape.
inference.services runs every request the same way whatever its face: nothing about keys,
limits, routing, failover, relaying or metering differs between them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from django.http import JsonResponse

from core import anthropic_errors
from core.errors import ApiError, error_response
from inference import anthropic_format
from inference.openai_format import ChunkWriter, completion_body, usage_dict
from inference.relay import Relay
from inference.validation import CompletionRequest, parse_chat


class StreamWriter(Protocol):
    def open(self, *, input_tokens: int) -> bytes: ...
    def content(self, text: str) -> bytes: ...
    def keep_alive(self) -> bytes: ...
    def finish(
        self, *, relay: Relay, router_finish: str | None, input_tokens: int, output_tokens: int
    ) -> bytes: ...
    def done(self) -> bytes: ...
    def cut(self, *, message: str, code: str) -> bytes: ...
    def cut_done(self) -> bytes: ...


class Face(Protocol):
    endpoint: str  # the usage record's endpoint

    def parse(self, body: Any) -> CompletionRequest: ...
    def ident(self, request_id: str) -> str: ...
    def error_response(self, error: ApiError, *, request_id: str) -> JsonResponse: ...
    def headers(self, headers: dict[str, str]) -> dict[str, str]: ...
    def body(
        self,
        *,
        ident: str,
        created: int,
        model: str,
        relay: Relay,
        router_finish: str | None,
        input_tokens: int,
        output_tokens: int,
        echo: str = "",
    ) -> dict: ...
    def writer(
        self, *, ident: str, created: int, model: str, creq: CompletionRequest, request_id: str
    ) -> StreamWriter: ...


class _OpenAIStream:
    """ChunkWriter in the order the pipeline writes a stream."""

    def __init__(self, chunks: ChunkWriter, *, include_usage: bool):
        self.chunks = chunks
        self.include_usage = include_usage

    def open(self, *, input_tokens: int) -> bytes:
        return self.chunks.role() if self.chunks.chat else b""

    def content(self, text: str) -> bytes:
        return self.chunks.content(text)

    def keep_alive(self) -> bytes:
        return self.chunks.keep_alive()

    def finish(
        self, *, relay: Relay, router_finish: str | None, input_tokens: int, output_tokens: int
    ) -> bytes:
        out = self.chunks.finish(relay.finish_reason(router_finish))
        if self.include_usage:
            out += self.chunks.usage(usage_dict(input_tokens, output_tokens))
        return out

    def done(self) -> bytes:
        return self.chunks.done()

    def cut(self, *, message: str, code: str) -> bytes:
        return self.chunks.error(message=message, code=code)

    def cut_done(self) -> bytes:
        return self.chunks.done()


class OpenAIFace:
    """/v1/chat/completions and /v1/completions."""

    def __init__(self, parse: Callable[[Any], CompletionRequest]):
        self.parse = parse
        self.endpoint = "chat.completions" if parse is parse_chat else "completions"

    def ident(self, request_id: str) -> str:
        prefix = "chatcmpl-" if self.endpoint == "chat.completions" else "cmpl-"
        return prefix + request_id[4:]

    def error_response(self, error: ApiError, *, request_id: str) -> JsonResponse:
        return error_response(error)

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        return headers

    def body(
        self,
        *,
        ident: str,
        created: int,
        model: str,
        relay: Relay,
        router_finish: str | None,
        input_tokens: int,
        output_tokens: int,
        echo: str = "",
    ) -> dict:
        return completion_body(
            endpoint=self.endpoint,
            ident=ident,
            created=created,
            model=model,
            text=echo + relay.text(),  # `echo`: the prompt, when a legacy completion asks
            finish_reason=relay.finish_reason(router_finish),
            usage=usage_dict(input_tokens, output_tokens),
        )

    def writer(
        self, *, ident: str, created: int, model: str, creq: CompletionRequest, request_id: str
    ) -> StreamWriter:
        chunks = ChunkWriter(endpoint=self.endpoint, ident=ident, created=created, model=model)
        return _OpenAIStream(chunks, include_usage=creq.include_usage)


class _AnthropicStream(anthropic_format.EventWriter):
    def cut_done(self) -> bytes:
        return b""  # Anthropic's stream ends at its error event


class AnthropicFace:
    """/v1/messages."""

    endpoint = anthropic_format.ENDPOINT

    def parse(self, body: Any) -> CompletionRequest:
        return anthropic_format.parse_messages(body)

    def ident(self, request_id: str) -> str:
        return "msg_" + request_id[4:]

    def error_response(self, error: ApiError, *, request_id: str) -> JsonResponse:
        return anthropic_errors.error_response(error, request_id=request_id)

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        return anthropic_errors.anthropic_headers(headers)

    def body(
        self,
        *,
        ident: str,
        created: int,
        model: str,
        relay: Relay,
        router_finish: str | None,
        input_tokens: int,
        output_tokens: int,
        echo: str = "",
    ) -> dict:
        return anthropic_format.message_body(
            ident=ident,
            model=model,
            text=relay.text(),
            relay=relay,
            router_finish=router_finish,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def writer(
        self, *, ident: str, created: int, model: str, creq: CompletionRequest, request_id: str
    ) -> StreamWriter:
        return _AnthropicStream(ident=ident, model=model, request_id=request_id)


ANTHROPIC = AnthropicFace()
