"""The public model catalog page: enabled models with their facts and ids to copy, and the
visitor's plan limits once logged in."""

from __future__ import annotations

import pytest

from accounts.models import Plan

pytestmark = pytest.mark.django_db


def test_anyone_sees_the_enabled_models_with_ids_to_copy(client, catalog):
    catalog["qwen"].enabled = False
    catalog["qwen"].save()
    catalog["llama"].description = "Meta's 8B instruct model."
    catalog["llama"].context_length = 8192
    catalog["llama"].save()
    from catalog.routing import bump_version

    bump_version()
    response = client.get("/models")
    body = response.content.decode()
    assert response.status_code == 200
    assert "Llama 3.1 8B" in body and "Meta&#x27;s 8B instruct model." in body
    assert "8,192 tokens" in body and "1,024 tokens" in body  # context, max output
    assert '<code id="model-id-1">cortensor/llama-3.1-8b</code>' in body
    assert 'data-copy="#model-id-1"' in body
    assert "qwen" not in body
    assert "Log in</a> to see yours" in body
    assert "on your plan" not in body


def test_a_logged_in_user_sees_their_plan_limits_and_which_models_it_allows(
    client, catalog, make_user
):
    pro = Plan.objects.create(
        name="starter", all_models=False, requests_per_minute=20, tokens_per_day=50_000
    )
    catalog["qwen"].plans.add(pro)
    carol = make_user("carol@example.com", plan_=pro)
    client.force_login(carol)
    body = client.get("/models").content.decode()
    assert "Your plan <strong>starter</strong>" in body
    assert '<td>Requests per minute</td><td class="num">20</td>' in body
    assert '<td>Tokens per day (UTC)</td><td class="num">50,000</td>' in body
    assert '<td>Requests per day (UTC)</td><td class="num">unlimited</td>' in body
    llama, qwen = body.split('id="model-2-name"')
    assert "not on your plan" in llama
    assert "on your plan" in qwen and "not on your plan" not in qwen


def test_an_empty_catalog_says_so(client, db):
    body = client.get("/models").content.decode()
    assert "No models are enabled yet." in body


def test_the_models_page_is_cheap(client, alice, catalog, django_assert_max_num_queries):
    client.force_login(alice)
    client.get("/models")  # builds this process's routing table
    with django_assert_max_num_queries(3):
        assert client.get("/models").status_code == 200
