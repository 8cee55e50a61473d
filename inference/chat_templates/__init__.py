"""Chat templates: turn OpenAI `messages` into the flat prompt a Cortensor router takes.

One module per template; `render(name, messages)` picks it. Messages arrive validated
(roles system/user/assistant, content as plain text, an optional participant `name`). Each
template neutralises its own special tokens in content and names (see `base.py` and each
module), so the rendered prompt has exactly the turns the API call had.
"""

from __future__ import annotations

from inference.chat_templates import chatml, llama3, plain
from inference.chat_templates.base import ChatMessage

_TEMPLATES = {"llama3": llama3.render, "chatml": chatml.render, "plain": plain.render}

NAMES = tuple(_TEMPLATES)


def render(name: str, messages) -> str:
    """`messages`: ChatMessage or (role, content[, name]) tuples."""
    return _TEMPLATES.get(name, plain.render)([ChatMessage(*m) for m in messages])
