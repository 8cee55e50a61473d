"""Validate OpenAI request bodies into small typed objects, with OpenAI-style 400s.

Written by hand rather than with DRF serializers: this runs on every request and must be cheap,
and every message must name the parameter (`param`) the way OpenAI's errors do. Unknown fields
are ignored, as OpenAI does; but a known sampling or output parameter is never silently
dropped: what the routers can do is forwarded (`seed`, `top_k`) or done here (`echo`, `user` on
the usage record), and what they cannot (tools, images, `n` > 1, `logit_bias`, logprobs) is
refused with a 400 naming the parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.errors import InvalidRequest
from inference.chat_templates.base import ChatMessage

MAX_MESSAGES = 2048
MAX_STOP_CHARS = 64
MAX_STOP = 4
MAX_NAME_LENGTH = 256
_ROLES = {"system", "user", "assistant", "developer"}
_UNSUPPORTED = {
    "tools": "Tool calling is not supported by this API yet.",
    "functions": "Function calling is not supported by this API yet.",
    "tool_choice": "Tool calling is not supported by this API yet.",
    "function_call": "Function calling is not supported by this API yet.",
    "logprobs": None,  # allowed when false
    "audio": "Audio output is not supported.",
    "logit_bias": "'logit_bias' is not supported: the model servers cannot bias tokens.",
    "top_logprobs": "'top_logprobs' is not supported (nor is 'logprobs').",
}
MAX_USER_LENGTH = 256


@dataclass(slots=True)
class Sampling:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    top_k: int | None = None
    user: str | None = None


@dataclass(slots=True)
class CompletionRequest:
    """What both endpoints reduce to: a model, a prompt (or messages), sampling, streaming."""

    model: str
    endpoint: str  # "chat.completions" or "completions"
    messages: list[ChatMessage] | None
    prompt: str | None
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


def _require_object(body) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _model(body: dict) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model.strip() or len(model) > 128 or not _printable(model):
        raise InvalidRequest(
            "'model' must be a model id string such as "
            "'cortensor/llama-3.1-8b' (see GET /v1/models).",
            param="model",
        )
    return model


def _printable(text: str) -> bool:
    """No control characters and valid UTF-8 (JSON allows lone surrogates such as \\ud800):
    the model id is stored with the usage record, and PostgreSQL refuses both."""
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a number between {lo} and {hi}.", param=name)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}; got {value}.", param=name)
    return float(value)


def _integer(body: dict, name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidRequest(f"'{name}' must be an integer.", param=name)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}; got {value}.", param=name)
    return value


def _boolean(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be true or false.", param=name)
    return value


def _sampling(body: dict) -> Sampling:
    max_tokens = _integer(body, "max_completion_tokens", 1, 1_000_000)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, 1_000_000)
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop] if stop else []
    elif isinstance(stop, list) and len(stop) > MAX_STOP:
        raise InvalidRequest(f"'stop' takes at most {MAX_STOP} sequences.", param="stop")
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = [s for s in stop if s]
    else:
        raise InvalidRequest(
            "'stop' must be a string or an array of up to 4 strings.", param="stop"
        )
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        # The stream holds back the longest stop's length before relaying: keep it small.
        raise InvalidRequest(
            f"Each 'stop' sequence may be at most {MAX_STOP_CHARS} characters long.",
            param="stop",
        )
    user = body.get("user")
    if user is not None and (
        not isinstance(user, str) or len(user) > MAX_USER_LENGTH or not _printable(user)
    ):
        raise InvalidRequest(
            f"'user' must be a string of at most {MAX_USER_LENGTH} characters without control "
            "characters.",
            param="user",
        )
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InvalidRequest(
            "Only n=1 is supported: send one request per completion.",
            param="n",
            code="unsupported_parameter",
        )
    for name, message in _UNSUPPORTED.items():
        value = body.get(name)
        if value not in (None, False, [], {}) and message:
            raise InvalidRequest(message, param=name, code="unsupported_parameter")
    if body.get("logprobs") not in (None, False, 0):
        raise InvalidRequest(
            "'logprobs' is not supported.", param="logprobs", code="unsupported_parameter"
        )
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind != "text":
            raise InvalidRequest(
                "Only response_format {'type': 'text'} is supported.",
                param="response_format",
                code="unsupported_parameter",
            )
    return Sampling(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=stops,
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
        seed=_integer(body, "seed", -(2**63), 2**63 - 1),
        top_k=_integer(body, "top_k", 0, 1_000_000),
        user=user or None,
    )


def _stream(body: dict) -> tuple[bool, bool]:
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
        if not stream:
            raise InvalidRequest(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise InvalidRequest(
                "'stream_options.include_usage' must be true or false.",
                param="stream_options.include_usage",
            )
    return stream, include_usage


def _content(value, index: int) -> str:
    param = f"messages[{index}].content"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(
                    "Each content part must be an object with a 'type'.", param=param
                )
            if part["type"] != "text":
                raise InvalidRequest(
                    f"Content parts of type '{part['type']}' are not supported; only 'text'.",
                    param=param,
                    code="unsupported_parameter",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest("A text part needs a string 'text'.", param=param)
            texts.append(text)
        return "".join(texts)
    raise InvalidRequest("'content' must be a string or an array of text parts.", param=param)


def _name(message: dict, index: int) -> str | None:
    """A participant's name: one line of text (the templates put it in a turn's header)."""
    name = message.get("name")
    if name is None or name == "":
        return None
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _printable(name):
        raise InvalidRequest(
            f"'name' must be a string of at most {MAX_NAME_LENGTH} characters "
            "without control characters.",
            param=f"messages[{index}].name",
        )
    return name


def _messages(body: dict) -> list[ChatMessage]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("You must provide 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(
            f"'messages' has {len(messages)} items; at most {MAX_MESSAGES}.", param="messages"
        )
    result = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(
                "Each message must be an object with 'role' and 'content'.",
                param=f"messages[{index}]",
            )
        role = message.get("role")
        if role == "tool" or role == "function" or message.get("tool_calls"):
            raise InvalidRequest(
                "Tool messages are not supported.",
                param=f"messages[{index}].role",
                code="unsupported_parameter",
            )
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(
                "'role' must be one of 'system', 'user' or 'assistant'.",
                param=f"messages[{index}].role",
            )
        content = message.get("content")
        if content is None:
            raise InvalidRequest(
                "Each message needs 'content'.", param=f"messages[{index}].content"
            )
        result.append(
            ChatMessage(
                "system" if role == "developer" else role,
                _content(content, index),
                _name(message, index),
            )
        )
    return result


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("You must provide a 'prompt'.", param="prompt")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        raise InvalidRequest(
            "'prompt' must be a string (batches of prompts are not supported).", param="prompt"
        )
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string.", param="prompt")
    return prompt


def parse_chat(body) -> CompletionRequest:
    body = _require_object(body)
    model = _model(body)
    messages = _messages(body)
    sampling = _sampling(body)
    stream, include_usage = _stream(body)
    if body.get("echo") not in (None, False):
        raise InvalidRequest(
            "'echo' is a parameter of /v1/completions, not of chat completions.",
            param="echo",
            code="unsupported_parameter",
        )
    return CompletionRequest(
        model=model,
        endpoint="chat.completions",
        messages=messages,
        prompt=None,
        sampling=sampling,
        stream=stream,
        include_usage=include_usage,
    )


def parse_completion(body) -> CompletionRequest:
    body = _require_object(body)
    model = _model(body)
    prompt = _prompt(body)
    sampling = _sampling(body)
    stream, include_usage = _stream(body)
    if body.get("suffix"):
        raise InvalidRequest(
            "'suffix' is not supported.", param="suffix", code="unsupported_parameter"
        )
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or best_of != 1):
        raise InvalidRequest("Only best_of=1 is supported.", param="best_of")
    return CompletionRequest(
        model=model,
        endpoint="completions",
        messages=None,
        prompt=prompt,
        sampling=sampling,
        stream=stream,
        include_usage=include_usage,
        echo=_boolean(body, "echo"),
    )
