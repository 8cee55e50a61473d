"""The docs page: quick start, SDK snippets, streaming, errors and limits, with this portal's
own base URL and the reader's newest key prefix filled in."""

from __future__ import annotations

import pytest

from apikeys.services import apikey_playground_principal, apikey_revoke

pytestmark = pytest.mark.django_db


def _docs(client) -> str:
    response = client.get("/docs", HTTP_HOST="api.example.test")
    assert response.status_code == 200
    return response.content.decode()


def test_anyone_gets_snippets_with_the_portals_own_base_url(client, catalog, settings):
    settings.ALLOWED_HOSTS = ["api.example.test"]
    body = _docs(client)
    assert 'base_url="http://api.example.test/v1"' in body  # Python
    assert 'baseURL: "http://api.example.test/v1"' in body  # JavaScript
    assert "curl http://api.example.test/v1/chat/completions" in body
    assert 'model="cortensor/llama-3.1-8b"' in body
    assert 'export CORTENSOR_API_KEY="paste-your-key-here"' in body
    assert "$CORTENSOR_API_KEY" in body
    assert "http://api.example.test/openapi.json" in body
    # Anthropic's SDK takes the site's root: it adds /v1/messages itself.
    assert 'anthropic.Anthropic(\n    base_url="http://api.example.test",' in body
    assert "curl http://api.example.test/v1/messages" in body
    assert 'api_key=os.environ["CORTENSOR_API_KEY"]' in body


def test_errors_limits_streaming_and_usage_are_explained(client, db, settings):
    settings.ALLOWED_HOSTS = ["api.example.test"]
    body = _docs(client)
    for status, code in [
        ("401", "invalid_api_key"),
        ("404", "model_not_found"),
        ("400", "invalid_request_error"),
        ("429", "rate_limit_exceeded"),
        ("429", "insufficient_quota"),
        ("503", "upstream_unavailable"),
        ("504", "upstream_timeout"),
        ("502", "upstream_error"),
    ]:
        assert f'<td class="num">{status}</td><td><code>{code}</code>' in body, code
    for header in ("limit", "remaining", "reset"):
        for kind in ("requests", "tokens"):
            assert f"x-ratelimit-{header}-{kind}" in body
    assert "Retry-After" in body
    assert "stream=True" in body and "data: [DONE]" in body
    assert "curl http://api.example.test/v1/usage" in body
    assert "MODEL_ID" in body  # no catalog yet: a visible placeholder


def test_a_logged_in_user_sees_their_newest_active_key_prefix(client, alice, make_key, settings):
    settings.ALLOWED_HOSTS = ["api.example.test"]
    old, _ = make_key(alice, "old")
    newest, _ = make_key(alice, "newest")
    revoked, _ = make_key(alice, "revoked")
    apikey_revoke(key=revoked)
    apikey_playground_principal(user=alice)  # her playground key is newer still
    client.force_login(alice)
    body = _docs(client)
    assert f'export CORTENSOR_API_KEY="ctsk_{newest.public_id}_…"' in body
    assert f"starts with <code>ctsk_{newest.public_id}_…</code>" in body
    assert f"your portal key (<code>ctsk_{newest.public_id}_…</code>)" in body  # Anthropic's
    assert revoked.public_id not in body and old.public_id not in body


def test_the_docs_never_show_another_users_key(client, alice, bob, make_key, settings):
    settings.ALLOWED_HOSTS = ["api.example.test"]
    bobs, _ = make_key(bob, "bob's")
    client.force_login(alice)
    body = _docs(client)
    assert bobs.public_id not in body
    assert 'CORTENSOR_API_KEY="paste-your-key-here"' in body
