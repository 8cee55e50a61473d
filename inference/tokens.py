"""Token estimates for when a router gives no usage (records are then marked estimated)."""


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English with Llama/Qwen tokenizers; good enough to bill
    # and to reserve against quotas, and never zero for a non-empty text.
    return (len(text) + 3) // 4 if text else 0
