"""Llama 3 / 3.1 instruct format, ending with an open assistant header."""


def render(messages: list[tuple[str, str]]) -> str:
    parts = ["<|begin_of_text|>"]
    for role, content in messages:
        parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)
