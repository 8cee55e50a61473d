"""Llama 3 / 3.1 instruct format, ending with an open assistant header.

Special tokens: `<|begin_of_text|>`, `<|end_of_text|>`, `<|start_header_id|>`,
`<|end_header_id|>`, `<|eot_id|>`, `<|eom_id|>`, `<|python_tag|>`,
`<|finetune_right_pad_id|>` and `<|reserved_special_token_N|>`; all are escaped in content
(see base.py). The format has no place for a participant name, so names are not rendered.
"""

from inference.chat_templates.base import ChatMessage, escape_special

SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_247|>",
)


def render(messages: list[ChatMessage]) -> str:
    parts = ["<|begin_of_text|>"]
    for m in messages:
        content = escape_special(m.content.strip())
        parts.append(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{content}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)
