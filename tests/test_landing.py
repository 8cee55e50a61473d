"""The public landing page: what the product is, which models run now, how to start."""

from __future__ import annotations

import html

import pytest

pytestmark = pytest.mark.django_db

API_BASE = "http://127.0.0.1:8000/v1"  # PORTAL_BASE_URL's default + /v1


def assert_portal_layout(response) -> None:
    body = response.content.decode()
    assert 'class="topbar"' in body, "not rendered inside templates/base.html"
    assert "css/portal.css" in body


@pytest.fixture
def models(db, plan):
    """Two enabled models (created out of sort order) and a disabled one."""
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="landing")
    CatalogModel.objects.create(
        public_id="cortensor/qwen-2.5-7b",
        display_name="Qwen 2.5 7B",
        pool=pool,
        context_length=32768,
    )
    CatalogModel.objects.create(
        public_id="cortensor/llama-3.1-8b",
        display_name="Llama 3.1 8B",
        pool=pool,
        description="Meta's small instruct model.",
    )
    CatalogModel.objects.create(
        public_id="cortensor/retired-model", display_name="Retired", pool=pool, enabled=False
    )


def test_anonymous_visitor_sees_the_pitch_and_sign_up(client, models):
    response = client.get("/")

    assert response.status_code == 200
    assert_portal_layout(response)
    body = response.content.decode()
    assert "OpenAI-compatible" in body
    assert "decentralized" in body
    assert 'href="/accounts/signup/"' in body
    assert "Go to dashboard" not in body


def test_lists_enabled_models_sorted_and_hides_disabled_ones(client, models):
    body = client.get("/").content.decode()

    llama = body.index("<code>cortensor/llama-3.1-8b</code>")
    qwen = body.index("<code>cortensor/qwen-2.5-7b</code>")
    assert llama < qwen
    assert "Llama 3.1 8B" in body
    assert "32,768 tokens" in body  # grouped, as everywhere
    assert "cortensor/retired-model" not in body


def test_get_started_snippets_use_the_api_base_url_and_a_real_model(client, models):
    body = html.unescape(client.get("/").content.decode())

    assert f"curl {API_BASE}/chat/completions" in body
    assert 'base_url="' + API_BASE + '"' in body
    assert '"model": "cortensor/llama-3.1-8b"' in body  # the first enabled model by id
    assert 'data-copy="#snippet-curl"' in body
    assert 'data-copy="#snippet-python"' in body
    for step in ("Sign up", "Create a key", "Call the API"):
        assert step in body


def test_empty_catalog_shows_an_empty_state_and_a_placeholder_model(client, plan):
    body = html.unescape(client.get("/").content.decode())

    assert 'class="empty"' in body
    assert "No models are enabled yet" in body
    assert '"model": "MODEL_ID"' in body


def test_a_signed_in_customer_still_sees_the_landing_page_with_a_dashboard_button(
    client, alice, models
):
    client.force_login(alice)

    response = client.get("/")

    assert response.status_code == 200
    body = response.content.decode()
    assert '<a class="button" href="/dashboard">Go to dashboard</a>' in body
    assert "Create a free account" not in body
    assert "Log out" in body


def test_landing_page_reads_the_catalog_from_the_routing_table_not_per_request(
    client, models, django_assert_num_queries
):
    client.get("/")  # builds the process's routing table

    with django_assert_num_queries(0):
        response = client.get("/")
    assert "cortensor/llama-3.1-8b" in response.content.decode()


def test_landing_page_answers_only_safe_methods(client, plan):
    assert client.post("/").status_code == 405


def test_unknown_page_gets_the_portal_404(client, plan):
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert_portal_layout(response)
    assert "Page not found" in response.content.decode()


def test_landing_page_still_renders_when_the_shared_cache_is_down(client, plan, settings):
    # A real, unreachable Redis: nothing listens on port 1.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }

    response = client.get("/")

    assert response.status_code == 200
    assert "No models are enabled yet" in response.content.decode()


def test_the_500_page_renders_without_any_request_context():
    from django.template.loader import render_to_string

    body = render_to_string("500.html")

    assert "Something went wrong" in body
    assert "css/portal.css" in body
