from __future__ import annotations


class RouterApi:
    """How to address one router API version. Routers answer the same request shape; what
    differs is the path, and whether a deployment takes the session id in the body or the path
    (some answer only one form: the client tries the other on 404)."""

    version = "v1"

    def completion_urls(self, base_url: str, session_id: int) -> tuple[str, str]:
        """(body form, path form) of the completions route."""
        root = f"{base_url}/api/{self.version}/completions"
        return root, f"{root}/{session_id}"

    def status_url(self, base_url: str) -> str:
        # Status lives under v1 on every deployment we know of.
        return f"{base_url}/api/v1/status"

    def payload(
        self,
        *,
        session_id: int,
        prompt: str,
        stream: bool,
        timeout: int,
        client_reference: str,
        sampling: dict,
    ) -> dict:
        body = {
            "session_id": session_id,
            "prompt": prompt,
            "prompt_type": 1,
            "prompt_template": "",
            "stream": stream,
            "timeout": timeout,
            "client_reference": client_reference,
        }
        body.update({k: v for k, v in sampling.items() if v is not None and v != []})
        return body
