"""Production's WSGI entry point sends /v1/ through the lean API stack (no sessions, CSRF or
CSP) and pages through the full one; /v1/ ignores the Accept header."""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest


def _call(path: str, **headers) -> tuple[str, dict, bytes]:
    from portal.wsgi import application

    environ = {
        "PATH_INFO": path,
        "REQUEST_METHOD": "GET",
        "wsgi.input": io.BytesIO(b""),
        "SERVER_NAME": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        **headers,
    }
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(response_headers)

    body = b"".join(application(environ, start_response))
    return seen["status"], {k.lower(): v for k, v in seen["headers"].items()}, body


@pytest.mark.django_db(transaction=True)
def test_api_goes_through_the_lean_stack_and_pages_through_the_full_one():
    status, headers, body = _call("/v1/models")
    assert status.startswith("401")
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert headers["x-request-id"].startswith("req_")
    assert "content-security-policy" not in headers  # page middleware did not run
    assert "vary" not in headers or "Cookie" not in headers["vary"]

    status, headers, _ = _call("/")
    assert status.startswith("200")
    assert "content-security-policy" in headers


@pytest.mark.django_db
def test_event_stream_accept_header_is_not_refused(client, catalog, alice_key):
    _, raw = alice_key
    response = client.post(
        "/v1/chat/completions",
        json.dumps(
            {
                "model": "cortensor/llama-3.1-8b",
                "stream": True,
                "max_tokens": 2,
                "messages": [{"role": "user", "content": "x"}],
            }
        ),
        content_type="application/json",
        HTTP_ACCEPT="text/event-stream",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 200
    assert b"".join(response.streaming_content).endswith(b"data: [DONE]\n\n")
