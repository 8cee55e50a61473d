"""OpenAI response shapes: chat.completion, text_completion and their SSE chunks."""

from __future__ import annotations

import json


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    *,
    endpoint: str,
    ident: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage: dict,
) -> dict:
    if endpoint == "chat.completions":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


# One encoder for every chunk: json.dumps with separators builds a new one for each call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class ChunkWriter:
    """Encodes one stream's SSE events; the id, created and model repeat on every chunk."""

    def __init__(self, *, endpoint: str, ident: str, created: int, model: str):
        self.chat = endpoint == "chat.completions"
        self.object = "chat.completion.chunk" if self.chat else "text_completion"
        self._head = {
            "id": ident,
            "object": self.object,
            "created": created,
            "model": model,
        }
        # A content chunk is most of a stream: its bytes around the text, built once (the
        # same bytes _event would make, without a dict and an encoder run per token).
        # The text is the chunk's last string, so its marker is the last one found.
        marker = "\x00"
        whole = self._event({"choices": [self._choice(marker, None)]})
        self._content_prefix, self._content_suffix = whole.rsplit(json.dumps(marker).encode(), 1)

    def _event(self, payload: dict) -> bytes:
        return b"data: " + _COMPACT.encode({**self._head, **payload}).encode() + b"\n\n"

    def _choice(self, text: str | None, finish_reason: str | None, role: bool = False) -> dict:
        if self.chat:
            delta: dict = {}
            if role:
                delta["role"] = "assistant"
                delta["content"] = ""
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def role(self) -> bytes:
        return self._event({"choices": [self._choice(None, None, role=True)]})

    def content(self, text: str) -> bytes:
        return self._content_prefix + json.dumps(text).encode() + self._content_suffix

    def _end_choice(self, finish_reason: str) -> dict:
        if self.chat:
            return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason}

    def finish(self, finish_reason: str) -> bytes:
        return self._event({"choices": [self._end_choice(finish_reason)]})

    def usage(self, usage: dict) -> bytes:
        return self._event({"choices": [], "usage": usage})

    def error(self, *, message: str, code: str) -> bytes:
        # No choice, so no finish_reason: chunk readers see an answer that never finished (and
        # the chunk stays valid against OpenAI's schemas, whose finish_reason has no "error");
        # the `error` member makes the OpenAI SDKs raise, so no client takes it as complete.
        return self._event(
            {
                "choices": [],
                "error": {"message": message, "type": "api_error", "param": None, "code": code},
            }
        )

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"

    @staticmethod
    def keep_alive() -> bytes:
        return b": keep-alive\n\n"
