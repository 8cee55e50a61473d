"""A plain transcript for models without a chat format."""

_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def render(messages: list[tuple[str, str]]) -> str:
    lines = [f"{_LABELS.get(role, role.title())}: {content}" for role, content in messages]
    lines.append("Assistant:")
    return "\n\n".join(lines)
