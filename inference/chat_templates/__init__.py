"""Chat templates: turn OpenAI `messages` into the flat prompt a Cortensor router takes.

One module per template; `render(name, messages)` picks it. Messages arrive validated
(roles system/user/assistant, content as plain text).
"""

from __future__ import annotations

from inference.chat_templates import chatml, llama3, plain

_TEMPLATES = {"llama3": llama3.render, "chatml": chatml.render, "plain": plain.render}

NAMES = tuple(_TEMPLATES)


def render(name: str, messages: list[tuple[str, str]]) -> str:
    return _TEMPLATES.get(name, plain.render)(messages)
