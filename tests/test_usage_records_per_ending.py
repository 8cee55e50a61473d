"""One usage record for every authenticated request, however it ends, and never two."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from inference import balancer
from metering.models import UsageRecord
from tests.routersim import RouterSim


def _pool(sim, name):
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=name)
    if sim is not None:
        Router.objects.create(pool=pool, base_url=sim.url, session_id=1, token="default-dev-token")
    CatalogModel.objects.create(
        public_id=f"cortensor/{name}",
        pool=pool,
        max_tokens=64,
        default_max_tokens=8,
        request_timeout=2,
    )
    return f"cortensor/{name}"


def _chat(client, raw, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}
    return client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


@pytest.fixture(autouse=True)
def _fresh_breakers():
    balancer.reset()


@pytest.mark.django_db
def test_ok_records_router_usage(client, catalog, alice_key):
    key, raw = alice_key
    response = _chat(client, raw, "cortensor/llama-3.1-8b", max_tokens=3)
    record = UsageRecord.objects.get()
    assert record.request_id == response["x-request-id"]
    assert (record.outcome, record.http_status, record.streamed) == ("ok", 200, False)
    assert (record.user_id, record.key_id) == (key.owner_id, key.pk)
    assert record.model == "cortensor/llama-3.1-8b" and record.pool == "default"
    assert record.router_id == catalog["router"].pk
    assert record.completion_tokens == 3 and not record.estimated
    assert record.total_tokens == response.json()["usage"]["total_tokens"]
    assert record.ttfb_ms is not None


@pytest.mark.django_db
def test_client_error_is_recorded_without_tokens(client, catalog, alice_key):
    _, raw = alice_key
    assert _chat(client, raw, "cortensor/llama-3.1-8b", temperature="hot").status_code == 400
    record = UsageRecord.objects.get()
    assert (record.outcome, record.http_status, record.error_code) == (
        "client_error",
        400,
        "invalid_request_error",
    )
    assert record.total_tokens == 0


@pytest.mark.django_db
def test_bad_key_writes_no_record(client, catalog):
    assert _chat(client, "ctsk_nope", "cortensor/llama-3.1-8b").status_code == 401
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db
def test_upstream_error_when_the_pool_is_down(client, alice_key):
    sim = RouterSim()
    sim.stop()
    model = _pool(sim, "down")
    _, raw = alice_key
    assert _chat(client, raw, model).status_code == 503
    record = UsageRecord.objects.get()
    assert (record.outcome, record.error_code, record.total_tokens) == (
        "upstream_error",
        "upstream_unavailable",
        0,
    )


@pytest.mark.django_db
def test_timeout(client, alice_key):
    with RouterSim("--hang") as sim:
        model = _pool(sim, "slow")
        _, raw = alice_key
        assert _chat(client, raw, model).status_code == 504
    record = UsageRecord.objects.get()
    assert (record.outcome, record.http_status) == ("timeout", 504)


@pytest.mark.django_db
def test_mid_stream_drop_bills_what_was_delivered(client, alice_key):
    with RouterSim("--drop-after", "3", "--chunks", "8") as sim:
        model = _pool(sim, "dropping")
        _, raw = alice_key
        b"".join(_chat(client, raw, model, stream=True).streaming_content)
    record = UsageRecord.objects.get()
    assert (record.outcome, record.streamed, record.estimated) == (
        "upstream_error",
        True,
        True,
    )
    assert record.completion_tokens == (len(" word0 word1 word2") + 3) // 4


@pytest.mark.django_db(transaction=True)
def test_client_disconnect_mid_stream_is_recorded_and_closes_upstream(live_server, alice_key):
    with RouterSim("--chunks", "200", "--chunk-delay-ms", "50") as sim:
        model = _pool(sim, "long")
        _, raw = alice_key
        host, port = live_server.url.removeprefix("http://").split(":")
        body = json.dumps(
            {"model": model, "stream": True, "messages": [{"role": "user", "content": "talk"}]}
        ).encode()
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {raw}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sock.settimeout(10)
        received = b""
        while received.count(b"data: ") < 4:
            data = sock.recv(4096)
            assert data, received
            received += data
        sock.close()
        deadline = time.monotonic() + 10
        while not UsageRecord.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        record = UsageRecord.objects.get()
        assert (record.outcome, record.streamed) == ("cancelled", True)
        assert record.completion_tokens > 0 and record.estimated
        # The upstream request was closed, not left running to its 200th chunk.
        status = requests.get(f"{sim.url}/api/v1/status", headers=sim.headers).json()
        deadline = time.monotonic() + 5
        while status["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.1)
            status = requests.get(f"{sim.url}/api/v1/status", headers=sim.headers).json()
        assert status["in_flight"] == 0


@pytest.mark.django_db
def test_a_request_id_is_never_recorded_twice(alice_key):
    from metering.recording import Usage, usage_record_write

    key, _ = alice_key
    usage = Usage(
        request_id="req_same", user_id=key.owner_id, key_id=key.pk, endpoint="completions"
    )
    assert usage_record_write(usage) is True
    assert usage_record_write(usage) is False
    assert UsageRecord.objects.filter(request_id="req_same").count() == 1
