"""What a router's refusal becomes. A 400/413/422 about the request is the customer's: one
400 `invalid_request_error` that names nothing of the router, tried once, not held against the
router. Any other error status before the first byte is the portal's: another router takes
it. A connection that breaks after the request went out is never sent again (the router may be
generating already)."""

from __future__ import annotations

import json
import logging

import openai
import pytest

from inference import balancer
from tests.builders import model_on_a_silent_port
from tests.routersim import RouterSim

pytestmark = pytest.mark.django_db(transaction=True)

SESSIONS = ("--sessions", "1,2,3")


@pytest.fixture(autouse=True)
def _fresh_breakers():
    balancer.reset()
    yield
    balancer.reset()


def _pool(routers: list[tuple[RouterSim, int]], name: str) -> str:
    """A model on a pool of (simulator, weight) routers. A simulator may appear more than once
    (routers of the pool on sessions of the same node, started with SESSIONS) to see whether a
    request is sent again."""
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=name)
    sessions: dict[int, int] = {}
    for sim, weight in routers:
        session_id = sessions[sim.port] = sessions.get(sim.port, 0) + 1
        Router.objects.create(
            pool=pool, base_url=sim.url, session_id=session_id, token=sim.token, weight=weight
        )
    CatalogModel.objects.create(
        public_id=f"cortensor/{name}", pool=pool, max_tokens=64, default_max_tokens=8
    )
    return f"cortensor/{name}"


def _completions(sim: RouterSim) -> int:
    import requests

    status = requests.get(f"{sim.url}/api/v1/status", headers=sim.headers, timeout=5).json()
    return status["requests_total"]


def _router_states(model_name: str) -> set[str]:
    from catalog.models import Router

    return {
        balancer.breaker_state(r.pk)
        for r in Router.objects.filter(pool__models__public_id=model_name)
    }


@pytest.mark.parametrize("code", [400, 413, 422])
def test_router_refusing_the_request_is_one_400_for_the_customer(live_server, alice_key, code):
    _, raw = alice_key
    with RouterSim("--status", str(code), *SESSIONS) as sim:
        # Two routers of the pool reach the same node: a failover would show as a 2nd request.
        model = _pool([(sim, 1), (sim, 1)], name=f"refusing-{code}")
        # The SDK as shipped (two retries on 408/409/429/5xx) must not retry this.
        client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, timeout=20)
        for _ in range(4):  # more than the breaker's threshold of failures
            with pytest.raises(openai.BadRequestError) as raised:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
            error = raised.value.body
            assert raised.value.status_code == 400
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "invalid_request_error"
            message = error["message"]
            for leak in ("simulated", "session", "127.0.0.1", str(sim.port), "router"):
                assert leak not in message
        assert _completions(sim) == 4  # tried once each: no failover, no SDK retry
    assert _router_states(model) == {"closed"}  # not held against the router

    from metering.models import UsageRecord

    records = list(UsageRecord.objects.filter(model=model))
    assert len(records) == 4
    assert {(r.outcome, r.http_status, r.total_tokens) for r in records} == {
        ("client_error", 400, 0)
    }


def test_a_refused_stream_is_a_400_before_any_chunk(client, alice_key):
    _, raw = alice_key
    with RouterSim("--status", "422") as sim:
        model = _pool([(sim, 1)], name="refusing-stream")
        response = client.post(
            "/v1/completions",
            json.dumps({"model": model, "prompt": "hi", "stream": True}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request_error"


@pytest.mark.parametrize(("code", "too_large"), [(400, False), (413, True), (422, False)])
def test_a_refusal_says_whether_the_request_was_too_large_and_is_logged(
    client, alice_key, caplog, code, too_large
):
    _, raw = alice_key
    caplog.set_level(logging.INFO, logger="inference.upstream")
    with RouterSim("--status", str(code)) as sim:
        model = _pool([(sim, 1)], name=f"refusal-words-{code}")
        response = client.post(
            "/v1/chat/completions",
            json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
    assert response.status_code == 400
    assert ("too large" in response.json()["error"]["message"]) is too_large
    from catalog.models import Router

    (logged,) = [r for r in caplog.records if r.getMessage() == "router refused the request"]
    assert (logged.router_id, logged.status) == (Router.objects.get(base_url=sim.url).pk, code)


@pytest.mark.parametrize("code", [401, 403, 404, 429, 500, 502, 503])
def test_other_router_errors_fail_over_to_another_router(client, alice_key, code):
    _, raw = alice_key
    with RouterSim("--status", str(code)) as bad, RouterSim("--chunks", "2") as good:
        # The failing router is nearly always tried first.
        model = _pool([(bad, 1000), (good, 1)], name=f"failing-{code}")
        for _ in range(3):
            response = client.post(
                "/v1/chat/completions",
                json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {raw}",
            )
            assert response.status_code == 200, response.content
            assert response.json()["choices"][0]["message"]["content"] == " word0 word1"
        assert _completions(bad) >= 1
        assert _completions(good) == 3


def test_a_connection_broken_after_the_request_went_out_is_not_sent_again(
    client, alice_key, caplog
):
    caplog.set_level(logging.WARNING, logger="inference.upstream")
    _, raw = alice_key
    # --drop-after cuts a non-stream request after reading it, without an answer.
    with RouterSim("--drop-after", "0", *SESSIONS) as sim:
        model = _pool([(sim, 1), (sim, 1), (sim, 1)], name="dropping")
        response = client.post(
            "/v1/chat/completions",
            json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "upstream_error"
        assert error["message"] == "The upstream model server failed. Retry in a moment."
        # Neither the portal nor urllib3 sent the generation a second time.
        assert _completions(sim) == 1
    from catalog.models import Router

    (broke,) = [
        r
        for r in caplog.records
        if r.getMessage() == "router connection broke after the request was sent"
    ]
    routers = set(Router.objects.filter(pool__models__public_id=model).values_list("pk", flat=True))
    assert broke.router_id in routers
    assert broke.reason == "ProtocolError"


def test_a_router_that_cannot_be_reached_is_skipped(client, alice_key):
    _, raw = alice_key
    with RouterSim("--chunks", "2") as good:
        dead = RouterSim()
        dead.stop()  # connection refused: nothing was sent, another router may take it
        model = _pool([(dead, 1000), (good, 1)], name="unreachable")
        response = client.post(
            "/v1/completions",
            json.dumps({"model": model, "prompt": "hi"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 200
        assert _completions(good) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_router_answering_only_the_path_form_is_asked_again_there(client, alice_key, stream):
    """Some deployments answer only `/api/<version>/completions/<session>`: the body form's
    404 is followed by the path form on the same router, at the router's API version."""
    import requests

    from catalog.models import CatalogModel, Router, RouterPool

    _, raw = alice_key
    with RouterSim("--path-only", "--sessions", "7", "--chunks", "2") as sim:
        pool = RouterPool.objects.create(name="path-only")
        Router.objects.create(
            pool=pool, base_url=sim.url, session_id=7, token=sim.token, api_version="v3"
        )
        CatalogModel.objects.create(
            public_id="cortensor/path-only", pool=pool, max_tokens=64, default_max_tokens=8
        )
        body = {"model": "cortensor/path-only", "messages": [{"role": "user", "content": "hi"}]}
        response = client.post(
            "/v1/chat/completions",
            json.dumps({**body, "stream": stream}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 200
        if stream:
            text = b"".join(response.streaming_content).decode()
            assert text.rstrip().endswith("data: [DONE]")
            assert "word0" in text and "word1" in text
        else:
            assert response.json()["choices"][0]["message"]["content"] == " word0 word1"
        seen = requests.get(f"{sim.url}/_sim/requests", headers=sim.headers, timeout=5).json()
    (forwarded,) = seen["requests"]  # the body form's 404 came before the body was read
    assert forwarded["path"] == "/api/v3/completions/7"
    assert forwarded["body"]["stream"] is stream


@pytest.mark.parametrize("form", [(), ("--path-only",)], ids=["body-form", "path-form"])
def test_a_hung_router_with_a_long_read_timeout_still_ends_at_the_models_timeout(
    live_server, alice_key, form
):
    """The model's timeout caps the router's own read timeout on a JSON call, on either form
    of the route. The client waits 30 s for the 504 the model's 1 s brings (a regression waits
    out the router's hour)."""
    import requests

    from catalog.models import CatalogModel, Router

    _, raw = alice_key
    with RouterSim("--hang", *form) as sim:
        model = _pool([(sim, 1)], name=f"hung-long-read{len(form)}")
        CatalogModel.objects.filter(public_id=model).update(request_timeout=1)
        Router.objects.filter(base_url=sim.url).update(read_timeout=3600)
        response = requests.post(
            f"{live_server.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {raw}"},
            timeout=30,
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_a_router_that_never_answers_the_connect_is_given_up_at_its_connect_timeout(
    live_server, alice_key, unanswered_port
):
    """A connect gets the router's connect timeout (1 s here), not the model's minute: the
    client waits 30 s for the 503 (a regression waits out the kernel's handshake retries)."""
    import requests

    model = model_on_a_silent_port(unanswered_port, connect_timeout=1, request_timeout=600)
    _, raw = alice_key
    response = requests.post(
        f"{live_server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {raw}"},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"
