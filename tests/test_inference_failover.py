"""Routing and failover across a pool: stopped and failing routers are skipped before the
first byte, a dead pool answers 503 at once, and a break mid-stream ends in an error chunk."""

from __future__ import annotations

import json
import logging

import pytest

from inference import balancer
from tests.builders import model_on_a_silent_port
from tests.routersim import RouterSim

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_breakers():
    balancer.reset()
    yield
    balancer.reset()


@pytest.fixture(scope="module")
def sims():
    good = RouterSim("--chunks", "3")
    failing = RouterSim("--error-rate", "1.0")
    stopped = RouterSim()
    stopped.stop()
    yield {"good": good, "failing": failing, "stopped": stopped}
    for sim in (good, failing, stopped):
        sim.stop()


def _pool(sims_used, name="mixed"):
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=name)
    for sim in sims_used:
        Router.objects.create(pool=pool, base_url=sim.url, session_id=1, token="default-dev-token")
    CatalogModel.objects.create(
        public_id=f"cortensor/{name}", pool=pool, max_tokens=64, default_max_tokens=8
    )
    return f"cortensor/{name}"


def _chat(client, raw, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


def _sse(response) -> list:
    text = b"".join(response.streaming_content).decode()
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def test_no_request_fails_with_one_router_stopped_and_one_failing(client, sims, alice_key):
    model = _pool([sims["stopped"], sims["failing"], sims["good"]])
    _, raw = alice_key
    for _ in range(12):
        response = _chat(client, raw, model)
        assert response.status_code == 200, response.content
        assert response.json()["choices"][0]["message"]["content"] == " word0 word1 word2"
    for _ in range(4):
        response = _chat(client, raw, model, stream=True)
        assert response.status_code == 200
        assert _sse(response)[-1] == "[DONE]"


def test_bad_routers_are_cut_out_by_the_breaker(client, sims, alice_key):
    model = _pool([sims["stopped"], sims["failing"], sims["good"]])
    _, raw = alice_key
    from catalog.models import Router

    def states():
        return {r.base_url: balancer.breaker_state(r.pk) for r in Router.objects.all()}

    # The order routers are tried in is random among equals: go on until each bad one has
    # been tried (and failed) three times, which a few dozen requests make near certain.
    for _ in range(60):
        assert _chat(client, raw, model).status_code == 200
        if states()[sims["stopped"].url] == states()[sims["failing"].url] == "open":
            break
    states = states()
    assert states[sims["stopped"].url] == "open"
    assert states[sims["failing"].url] == "open"
    assert states[sims["good"].url] == "closed"


def test_all_routers_down_is_a_quick_503(client, sims, alice_key, caplog):
    caplog.set_level(logging.WARNING, logger="inference.upstream")
    model = _pool([sims["stopped"], sims["failing"]], name="dead")
    _, raw = alice_key
    response = _chat(client, raw, model)
    # 503 at once, not a 504 after the model's timeout (how long it took is for `make bench`).
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["message"] == (
        "The model's servers are unavailable right now. Retry in a few seconds."
    )
    # Router details never reach the customer.
    assert sims["failing"].url not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()
    # The operator's side: each router tried, by id and why, then the give-up.
    from catalog.models import Router

    ids = {r.base_url: r.pk for r in Router.objects.filter(pool__models__public_id=model)}
    tried = [
        (r.router_id, r.reason)
        for r in caplog.records
        if r.getMessage() == "router failed before the first byte, trying another"
    ]
    assert sorted(tried) == sorted(
        [(ids[sims["stopped"].url], "NewConnectionError"), (ids[sims["failing"].url], "HTTP 503")]
    )
    (gave_up,) = [r for r in caplog.records if r.getMessage() == "every router tried failed"]
    assert (gave_up.tried, gave_up.reason) == (2, tried[-1][1])


def test_a_pool_whose_breakers_are_all_open_has_no_capacity(client, sims, alice_key):
    from catalog.models import Router

    model = _pool([sims["stopped"], sims["failing"]], name="cut-out")
    for router in Router.objects.filter(pool__models__public_id=model):
        for _ in range(balancer.FAILURES_TO_OPEN):
            balancer.record_failure(router.pk)
    _, raw = alice_key
    response = _chat(client, raw, model)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["message"] == (
        "No capacity is available for this model right now. Retry in a few seconds."
    )


def test_drop_mid_stream_ends_with_error_chunk_and_done(client, alice_key):
    with RouterSim("--drop-after", "2", "--chunks", "6") as sim:
        model = _pool([sim], name="dropping")
        _, raw = alice_key
        response = _chat(client, raw, model, stream=True)
        assert response.status_code == 200
        events = _sse(response)
    assert events[-1] == "[DONE]"
    error_chunk = events[-2]
    assert error_chunk["choices"] == []  # no finish_reason: the answer did not finish
    assert error_chunk["error"]["code"] == "upstream_error"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == " word0 word1"


def test_hanging_router_times_out_with_504(client, alice_key):
    from catalog.models import CatalogModel

    with RouterSim("--hang") as sim:
        model = _pool([sim], name="hanging")
        CatalogModel.objects.filter(public_id=model).update(request_timeout=1)
        _, raw = alice_key
        response = _chat(client, raw, model)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert error["message"] == "The model did not answer in time. Retry, or lower max_tokens."


def test_a_streams_reads_wait_the_routers_read_timeout_not_the_calls(client, alice_key):
    """The model's timeout caps a JSON call; a stream's gaps between chunks wait the router's
    read timeout (its whole length is STREAM_MAX_SECONDS)."""
    from catalog.models import CatalogModel, Router

    with RouterSim("--chunks", "3", "--chunk-delay-ms", "1500") as sim:
        model = _pool([sim], name="slow-chunks")
        CatalogModel.objects.filter(public_id=model).update(request_timeout=1)
        Router.objects.filter(base_url=sim.url).update(read_timeout=30)
        _, raw = alice_key
        response = _chat(client, raw, model, stream=True)
        assert response.status_code == 200
        events = _sse(response)
    assert events[-1] == "[DONE]"
    assert all("error" not in e for e in events[:-1]), events
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
    )
    assert text == " word0 word1 word2"


@pytest.mark.parametrize("option", ["--json-for-stream", "--interleave", "--no-done", "--no-usage"])
def test_router_oddities_are_survived(client, alice_key, option):
    with RouterSim(option, "--chunks", "3") as sim:
        model = _pool([sim], name="odd")
        _, raw = alice_key
        events = _sse(
            _chat(client, raw, model, stream=True, stream_options={"include_usage": True})
        )
    assert events[-1] == "[DONE]"
    text = "".join(
        (e["choices"][0]["delta"].get("content") or "") for e in events[:-1] if e["choices"]
    )
    assert text == " word0 word1 word2"
    usage = events[-2]["usage"]
    if option == "--no-usage":  # estimated from the delivered text, and marked so
        from metering.models import UsageRecord

        assert usage["completion_tokens"] > 0
        assert UsageRecord.objects.get().estimated is True
    else:
        assert usage["completion_tokens"] == 3


def test_a_connect_that_outlasts_the_models_timeout_is_a_503(client, alice_key, unanswered_port):
    """The deadline passes while the only router's connect waits: nothing was sent, no router
    is left in time, and the customer gets the pool's 503, not an error of the portal's."""
    model = model_on_a_silent_port(unanswered_port, connect_timeout=2, request_timeout=1)
    _, raw = alice_key
    response = _chat(client, raw, model)
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_an_answer_clears_the_routers_failures(client, alice_key):
    """The breaker counts failures in a row: an answer in between starts the count again."""
    from catalog.models import Router

    _, raw = alice_key
    with RouterSim("--chunks", "2") as sim:
        model = _pool([sim], name="recovering")
        router = Router.objects.get(base_url=sim.url)
        for _ in range(balancer.FAILURES_TO_OPEN - 1):
            balancer.record_failure(router.pk)
        assert _chat(client, raw, model).status_code == 200
        for _ in range(balancer.FAILURES_TO_OPEN - 1):
            balancer.record_failure(router.pk)
    assert balancer.breaker_state(router.pk) == "closed"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("answer", "status"),
    [(("--chunks", "2"), 200), (("--status", "422"), 400)],
    ids=["ok", "refused"],
)
def test_an_answered_or_refused_request_gives_the_routers_slot_back(
    client, alice_key, stream, answer, status
):
    from catalog.models import Router

    _, raw = alice_key
    with RouterSim(*answer) as sim:
        model = _pool([sim], name="slot")
        router = Router.objects.get(base_url=sim.url)
        response = _chat(client, raw, model, stream=stream)
        assert response.status_code == status
        if stream and status == 200:
            assert _sse(response)[-1] == "[DONE]"
    assert balancer.in_flight_snapshot().get(router.pk, 0) == 0
    # A refusal is the request's fault, not the router's.
    assert balancer.breaker_state(router.pk) == "closed"


def test_an_unexpected_error_still_gives_the_router_its_verdict_and_slot_back():
    """Whatever goes wrong between the pick and the answer (here: building the payload), the
    router's slot is given back and the breaker counts it."""
    from catalog.routing import ModelInfo, RouterInfo
    from inference import upstream

    router = RouterInfo(
        id=9001,
        pool_id=1,
        base_url="http://127.0.0.1:9",
        api_version="v1",
        session_id=1,
        token="t",
        weight=1,
        connect_timeout=1.0,
        read_timeout=None,
        health="healthy",
    )
    model = ModelInfo(
        public_id="cortensor/x",
        display_name="x",
        description="",
        pool_id=1,
        pool_name="p",
        context_length=4096,
        chat_template="llama3",
        default_max_tokens=8,
        max_tokens=64,
        request_timeout=5,
        plan_ids=frozenset(),
        created=0,
    )

    def payload_for(_router):
        raise RuntimeError("no payload")

    for _ in range(balancer.FAILURES_TO_OPEN):
        with pytest.raises(RuntimeError):
            upstream.open_completion(
                routers=[router], model=model, payload_for=payload_for, stream=False
            )
    assert balancer.in_flight_snapshot().get(router.id, 0) == 0
    assert balancer.breaker_state(router.id) == "open"


def test_a_stream_whose_router_stops_sending_ends_with_a_timeout_chunk(client, alice_key):
    from catalog.models import Router

    with RouterSim("--chunks", "3", "--chunk-delay-ms", "1500") as sim:
        model = _pool([sim], name="stopped-sending")
        Router.objects.filter(base_url=sim.url).update(read_timeout=0.5)
        _, raw = alice_key
        response = _chat(client, raw, model, stream=True)
        assert response.status_code == 200
        events = _sse(response)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "upstream_timeout"
    assert "incomplete" in error["message"]
