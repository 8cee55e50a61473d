"""ChatML (Qwen, many fine-tunes), ending with an open assistant turn.

Special tokens: `<|im_start|>`, `<|im_end|>` and Qwen's `<|endoftext|>`; all are escaped in
content and names (see base.py). A participant name goes in the header the way OpenAI's
ChatML spec puts it (`<|im_start|>user name=alice`).
"""

from inference.chat_templates.base import ChatMessage, escape_special

SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def _header(message: ChatMessage) -> str:
    if message.name:
        return f"{message.role} name={escape_special(message.name)}"
    return message.role


def render(messages: list[ChatMessage]) -> str:
    parts = [f"<|im_start|>{_header(m)}\n{escape_special(m.content)}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)
