"""Token estimates, for when a router gives no usable count (records are then marked
estimated), for the prompt at admission, and for cutting an answer at max_tokens.

One rule for every script, so that no language can be used to pay less: Latin-script text
(ASCII and the Latin-1 and Latin Extended blocks) at ~4 characters per token, as Llama and Qwen
tokenizers cut English; every other character (CJK, kana, Hangul, Cyrillic, Arabic, emoji...)
as a token of its own, which those tokenizers rarely beat. Streamed or not, an answer is
estimated from the same text by the same rule."""

from __future__ import annotations

import re

LATIN_CHARS_PER_TOKEN = 4
_NOT_LATIN = re.compile(r"[^\u0000-\u024f]+")


def estimate_tokens(text: str) -> int:
    """Never zero for a non-empty text."""
    if not text:
        return 0
    if text.isascii():  # the common case, without a pass of the regex
        return -(-len(text) // LATIN_CHARS_PER_TOKEN)
    latin = len(_NOT_LATIN.sub("", text))
    other = len(text) - latin
    return -(-latin // LATIN_CHARS_PER_TOKEN) + other


def prefix_within(text: str, tokens: int) -> str:
    """The longest start of `text` whose estimate is at most `tokens`."""
    if estimate_tokens(text) <= tokens:
        return text
    low, high = 0, len(text)  # estimate_tokens grows with the length: bisect
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) <= tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]
