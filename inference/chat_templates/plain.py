"""A plain transcript for models without a chat format.

It has no special tokens: a turn is a blank line, then a role label and a colon at the start
of a line (`User: `, or `User (alice): ` with a name). A line of content or a name that
starts with a role label is escaped with a zero-width space in front of the label, so the
caller cannot start a turn of their own; `<|...|>` spellings are escaped as in every template
(see base.py). Models read a plain transcript loosely whatever we do: prefer a model's own
template (llama3, chatml) whenever it has one.
"""

import re

from inference.chat_templates.base import ESCAPE, ChatMessage, escape_special

_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
SPECIAL_TOKENS = tuple(f"{label}:" for label in _LABELS.values())
# A role label at the start of a line, with or without a "(name)", in any case.
_LABEL_AT_LINE_START = re.compile(
    r"^(\s*)(system|user|assistant)\b(?=\s*(\([^\n]*\))?\s*:)", re.IGNORECASE | re.MULTILINE
)

_NAME_BREAKERS = re.compile(r"[():\r\n]")


def _escape(text: str) -> str:
    return _LABEL_AT_LINE_START.sub(
        lambda m: m.group(1) + ESCAPE + m.group(2), escape_special(text)
    )


def _label(message: ChatMessage) -> str:
    label = _LABELS.get(message.role, message.role.title())
    if message.name:
        # Parentheses or a colon inside a name could close the label early.
        return f"{label} ({_NAME_BREAKERS.sub('_', _escape(message.name))})"
    return label


def render(messages: list[ChatMessage]) -> str:
    lines = [f"{_label(m)}: {_escape(m.content)}" for m in messages]
    lines.append("Assistant:")
    return "\n\n".join(lines)
