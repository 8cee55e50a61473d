"""Nothing a router sends can break the bill or the portal: its usage counts are checked and
clamped, the answer is cut at max_tokens and at stop sequences whatever the router honours,
billing follows what was delivered (the same streamed or not), and the size and duration of
what it sends are bounded. Each case is a real router simulator over HTTP."""

from __future__ import annotations

import json
import logging

import pytest

from inference import balancer
from metering.models import UsageRecord
from tests.routersim import RouterSim

pytestmark = pytest.mark.django_db

MAX_TOKENS = 8


@pytest.fixture(autouse=True)
def _fresh_breakers():
    balancer.reset()
    yield
    balancer.reset()


def _model_on(sim: RouterSim, **fields) -> str:
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=f"bounds-{sim.port}")
    Router.objects.create(pool=pool, base_url=sim.url, session_id=1, token=sim.token)
    values = {"max_tokens": 64, "default_max_tokens": MAX_TOKENS, "context_length": 4096}
    CatalogModel.objects.create(
        public_id=f"cortensor/bounds-{sim.port}", pool=pool, **{**values, **fields}
    )
    return f"cortensor/bounds-{sim.port}"


def _post(client, raw, model, path="/v1/chat/completions", **extra):
    body = {"model": model, **extra}
    if path.endswith("chat/completions"):
        body.setdefault("messages", [{"role": "user", "content": "Tell me a story."}])
    else:
        body.setdefault("prompt", "Tell me a story.")
    return client.post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )


def _events(response) -> list:
    text = b"".join(response.streaming_content).decode()
    data = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


def _streamed_text(events) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def _record(response) -> UsageRecord:
    return UsageRecord.objects.get(request_id=response["x-request-id"])


# -- the router's counts ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_absurd_completion_count_is_clamped_and_the_record_written(
    client, alice_key, caplog, stream
):
    _, raw = alice_key
    with RouterSim("--usage-tokens", str(2**40), "--chunks", "3") as sim:
        model = _model_on(sim)
        with caplog.at_level(logging.WARNING, logger="inference.relay"):
            extra = {"stream_options": {"include_usage": True}} if stream else {}
            response = _post(client, raw, model, stream=stream, **extra)
            assert response.status_code == 200
            if stream:
                events = _events(response)
                assert _streamed_text(events) == " word0 word1 word2"
                usage = events[-2]["usage"]
            else:
                usage = response.json()["usage"]
                assert response.json()["choices"][0]["message"]["content"] == " word0 word1 word2"
    assert usage["completion_tokens"] == MAX_TOKENS  # bounded by what was asked
    record = _record(response)
    assert (record.completion_tokens, record.estimated) == (MAX_TOKENS, True)
    assert record.total_tokens == record.prompt_tokens + MAX_TOKENS
    router_id = record.router_id
    (warning,) = [r for r in caplog.records if "out of bounds" in r.getMessage()]
    assert warning.router_id == router_id


def test_counts_within_bounds_are_billed_as_reported(client, alice_key):
    _, raw = alice_key
    with RouterSim("--chunks", "3") as sim:
        model = _model_on(sim)
        response = _post(client, raw, model)
    record = _record(response)
    assert (record.completion_tokens, record.estimated) == (3, False)
    assert response.json()["usage"]["completion_tokens"] == 3


# -- max_tokens, whatever the router honours --------------------------------------------------


def test_max_tokens_is_enforced_on_a_json_answer(client, alice_key):
    _, raw = alice_key
    with RouterSim("--ignore-max-tokens", "--chunks", "8") as sim:
        model = _model_on(sim)
        response = _post(client, raw, model, max_tokens=3)
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == " word0 word1 word2"
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 3
    assert _record(response).completion_tokens == 3


def test_max_tokens_is_enforced_on_a_stream(client, alice_key):
    _, raw = alice_key
    with RouterSim("--ignore-max-tokens", "--chunks", "50") as sim:
        model = _model_on(sim)
        response = _post(
            client, raw, model, stream=True, max_tokens=3, stream_options={"include_usage": True}
        )
        events = _events(response)
    assert _streamed_text(events) == " word0 word1 word2"
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"]]
    assert finishes[-1] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 3
    assert events[-1] == "[DONE]"
    assert _record(response).completion_tokens == 3


def test_max_tokens_is_enforced_on_an_sse_answer_to_a_json_request(client, alice_key):
    _, raw = alice_key
    with RouterSim("--sse-for-json", "--ignore-max-tokens", "--chunks", "50") as sim:
        model = _model_on(sim)
        response = _post(client, raw, model, path="/v1/completions", max_tokens=3)
    choice = response.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (" word0 word1 word2", "length")
    assert _record(response).completion_tokens == 3


# -- billing a stop sequence ------------------------------------------------------------------


def _usage_for(client, raw, model, *, stream: bool, **extra) -> dict:
    response = _post(
        client,
        raw,
        model,
        stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
        **extra,
    )
    assert response.status_code == 200
    if stream:
        events = _events(response)
        return {
            "text": _streamed_text(events),
            "usage": events[-2]["usage"],
            "record": _record(response),
        }
    body = response.json()
    return {
        "text": body["choices"][0]["message"]["content"],
        "usage": body["usage"],
        "record": _record(response),
    }


def test_a_stop_sequence_bills_the_router_count_scaled_to_what_was_delivered(client, alice_key):
    _, raw = alice_key
    with RouterSim("--chunks", "8") as sim:
        model = _model_on(sim)
        whole = _usage_for(client, raw, model, stream=False)
        cut_json = _usage_for(client, raw, model, stream=False, stop="word4")
        cut_stream = _usage_for(client, raw, model, stream=True, stop="word4")
    assert cut_json["text"] == cut_stream["text"] == " word0 word1 word2 word3 "
    # The prompt as the router counted it, not the portal's estimate.
    assert cut_json["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert cut_stream["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    # The router's 8 completion tokens, scaled to the half that was delivered.
    assert 0 < cut_json["usage"]["completion_tokens"] < whole["usage"]["completion_tokens"] == 8
    # The same bill, streamed or not.
    assert cut_stream["usage"] == cut_json["usage"]
    for cut in (cut_json, cut_stream):
        record = cut["record"]
        assert (record.prompt_tokens, record.completion_tokens) == (
            cut["usage"]["prompt_tokens"],
            cut["usage"]["completion_tokens"],
        )
        assert record.estimated


def test_without_router_counts_the_estimate_is_the_same_streamed_or_not(client, alice_key):
    _, raw = alice_key
    with RouterSim("--no-usage", "--chunks", "6") as sim:
        model = _model_on(sim)
        as_json = _usage_for(client, raw, model, stream=False, stop="word4")
        streamed = _usage_for(client, raw, model, stream=True, stop="word4")
    assert as_json["usage"] == streamed["usage"]
    assert as_json["record"].estimated and streamed["record"].estimated


# -- size, time and the stop strings themselves -----------------------------------------------


def test_a_json_answer_over_upstream_max_bytes_is_refused(client, alice_key, settings):
    settings.UPSTREAM_MAX_BYTES = 1024
    _, raw = alice_key
    with RouterSim("--chunks", "400") as sim:
        model = _model_on(sim, max_tokens=1000)
        response = _post(client, raw, model, max_tokens=400)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "sent an answer too large to relay" in response.json()["error"]["message"]
    assert _record(response).outcome == "upstream_error"


def test_a_trickling_json_answer_is_cut_at_the_call_deadline(client, alice_key):
    _, raw = alice_key
    # Every piece arrives well within the read timeout; only the whole call is too long.
    with RouterSim("--stream-seconds", "6") as sim:
        model = _model_on(sim, request_timeout=1)
        response = _post(client, raw, model)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_a_trickling_sse_answer_to_a_json_request_is_cut_at_the_call_deadline(client, alice_key):
    _, raw = alice_key
    with RouterSim("--sse-for-json", "--stream-seconds", "6", "--chunks", "12") as sim:
        model = _model_on(sim, request_timeout=1)
        response = _post(client, raw, model)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert error["message"] == "The model did not finish its answer in time."


def test_a_stream_reaching_stream_max_seconds_ends_with_the_error_chunk(
    client, alice_key, settings
):
    settings.STREAM_MAX_SECONDS = 1
    _, raw = alice_key
    with RouterSim("--stream-seconds", "30", "--chunks", "60") as sim:
        model = _model_on(sim, max_tokens=64)
        response = _post(client, raw, model, stream=True, max_tokens=60)
        events = _events(response)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"] == []  # no finish_reason: the answer did not finish
    assert events[-2]["error"]["code"] == "upstream_timeout"
    record = _record(response)
    assert record.outcome == "timeout"
    assert record.estimated


def test_a_stop_string_over_64_characters_is_refused(client, alice_key, catalog):
    _, raw = alice_key
    ok = _post(client, raw, "cortensor/llama-3.1-8b", stop=["x" * 64])
    assert ok.status_code == 200
    response = _post(client, raw, "cortensor/llama-3.1-8b", stop=["end", "x" * 65])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "stop" and error["code"] == "invalid_request_error"
    assert "64" in error["message"]
