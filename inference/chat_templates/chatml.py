"""ChatML (Qwen, many fine-tunes), ending with an open assistant turn."""


def render(messages: list[tuple[str, str]]) -> str:
    parts = [f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)
