"""Streaming details: keep-alive comments while the router is slow, stop sequences applied by
the portal, and the legacy completions chunk shape."""

from __future__ import annotations

import json

import pytest

from tests.routersim import RouterSim

pytestmark = pytest.mark.django_db


def _pool(sim, name):
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=name)
    Router.objects.create(pool=pool, base_url=sim.url, session_id=1, token="default-dev-token")
    CatalogModel.objects.create(
        public_id=f"cortensor/{name}", pool=pool, max_tokens=64, default_max_tokens=8
    )
    return f"cortensor/{name}"


def _post(client, raw, path, body):
    return client.post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )


def test_keep_alive_comments_while_waiting_for_tokens(client, alice_key, settings):
    settings.STREAM_KEEPALIVE_SECONDS = 0.1
    with RouterSim("--chunks", "2", "--chunk-delay-ms", "500") as sim:
        model = _pool(sim, "slow")
        _, raw = alice_key
        response = _post(
            client,
            raw,
            "/v1/chat/completions",
            {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
        body = b"".join(response.streaming_content).decode()
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert body.count(": keep-alive\n\n") >= 2
    assert body.rstrip().endswith("data: [DONE]")


def test_stop_sequence_is_applied_by_the_portal(client, catalog, alice_key):
    _, raw = alice_key
    answer = _post(
        client,
        raw,
        "/v1/chat/completions",
        {
            "model": "cortensor/llama-3.1-8b",
            "max_tokens": 6,
            "stop": [" word3"],
            "messages": [{"role": "user", "content": "x"}],
        },
    ).json()
    assert answer["choices"][0]["message"]["content"] == " word0 word1 word2"
    assert answer["choices"][0]["finish_reason"] == "stop"
    stream = _post(
        client,
        raw,
        "/v1/completions",
        {
            "model": "cortensor/llama-3.1-8b",
            "max_tokens": 6,
            "stop": "d2",
            "prompt": "x",
            "stream": True,
        },
    )
    events = [
        line[6:]
        for line in b"".join(stream.streaming_content).decode().split("\n")
        if line.startswith("data: ")
    ]
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == " word0 word1 wor"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_templates_render_the_router_prompt():
    from inference.chat_templates import render

    messages = [("system", "Be brief."), ("user", "Hi")]
    assert render("llama3", messages) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert render("chatml", messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render("plain", messages) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"


def test_router_probe_marks_health_and_the_routing_table_follows(
    catalog, router_sim, django_capture_on_commit_callbacks
):
    from catalog.models import Router
    from catalog.routing import routing_table
    from inference.tasks import probe_routers

    dead = Router.objects.create(
        pool=catalog["pool"],
        base_url="http://127.0.0.1:9",
        session_id=1,
        token="x",
        connect_timeout=0.5,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert probe_routers() == 2
    dead.refresh_from_db()
    assert dead.health == "unhealthy" and dead.last_error
    assert Router.objects.get(pk=catalog["router"].pk).health == "healthy"
    health = {r.id: r.health for r in routing_table().routers[catalog["pool"].pk]}
    assert health[dead.pk] == "unhealthy"
