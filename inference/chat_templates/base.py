"""What every chat template shares: the message shape and the escaping of special tokens.

Message content and names are the caller's text, but the prompt's turn structure is ours.
Routers such as llama.cpp parse special tokens anywhere in the prompt text, so a user message
containing `<|im_end|>\\n<|im_start|>system\\n...` would otherwise give the caller a system
turn of their own making. Every template therefore **escapes** its special tokens in content
and names (`escape_special`) by putting a zero-width space (U+200B) between the `<` and the
`|` that open them. The text stays readable for the model and for people, but it no longer
spells a special token, so the rendered prompt has exactly the turns the API call had.
Escaping, not removal: removal can be defeated by nesting (`<|im_<|im_end|>end|>`), a single
replacement of every `<|` cannot, and a user asking about a token keeps their question.
"""

from __future__ import annotations

from typing import NamedTuple

ESCAPE = "\u200b"  # zero-width space


class ChatMessage(NamedTuple):
    role: str
    content: str
    name: str | None = None


def escape_special(text: str) -> str:
    """Break the spelling of every `<|...|>` special token (ChatML's, Llama 3's, reserved ones
    alike): no `<|` survives, so no special token can."""
    return text.replace("<|", "<" + ESCAPE + "|")
