"""/metrics: what operators alert on, readable only by the host itself or by a token holder.

In-process tests use the single-process registry; the last tests run gunicorn with two
workers in prometheus_client's multiprocess mode and check that a scrape sums both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from catalog.models import Router
from catalog.routing import bump_version
from tests.routersim import RouterSim
from tests.servehelpers import MODEL, Gunicorn, provision

pytestmark = pytest.mark.django_db

LLAMA = "cortensor/llama-3.1-8b"


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(client, raw, **extra):
    body = {
        "model": LLAMA,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        **extra,
    }
    return client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


# --- who may read it ------------------------------------------------------------------------------


def test_loopback_client_may_scrape_without_a_token(client):
    samples = scrape(client, REMOTE_ADDR="127.0.0.1")
    assert ("portal_streams_in_flight", ()) in samples
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_other_clients_are_refused_without_a_token(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert b"portal_requests" not in response.content


def test_a_request_through_a_local_proxy_is_not_a_loopback_client(client):
    # nginx on the same host connects from 127.0.0.1 on behalf of the whole internet.
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 403


@override_settings(METRICS_TOKEN="scrape-token-123")
def test_with_a_token_set_the_token_is_required_even_from_loopback(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert (
        client.get(
            "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer wrong-token"
        ).status_code
        == 403
    )
    assert (
        client.get(
            "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Basic scrape-token-123"
        ).status_code
        == 403
    )
    response = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-token-123"
    )
    assert response.status_code == 200
    assert b"portal_streams_in_flight" in response.content


# --- what it says ----------------------------------------------------------------------------


def test_a_completion_is_counted_by_model_endpoint_and_outcome(client, catalog, alice_key):
    _, raw = alice_key
    before = scrape(client)
    started = time.monotonic()
    assert chat(client, raw).status_code == 200
    elapsed = time.monotonic() - started
    after = scrape(client)
    ok = {"model": LLAMA, "endpoint": "chat.completions", "outcome": "ok"}
    assert (
        value(after, "portal_requests_total", **ok)
        == value(before, "portal_requests_total", **ok) + 1
    )
    for name in (
        "portal_request_duration_seconds_count",
        "portal_time_to_first_byte_seconds_count",
    ):
        labels = {"endpoint": "chat.completions", "streamed": "false"}
        assert value(after, name, **labels) == value(before, name, **labels) + 1
    router = str(catalog["router"].pk)
    assert value(after, "portal_upstream_latency_seconds_count", router=router, result="200") == (
        value(before, "portal_upstream_latency_seconds_count", router=router, result="200") + 1
    )
    # The router call's observed duration is part of the request's, whatever the machine's speed.
    observed = value(
        after, "portal_upstream_latency_seconds_sum", router=router, result="200"
    ) - value(before, "portal_upstream_latency_seconds_sum", router=router, result="200")
    assert 0 < observed <= elapsed
    for kind in ("prompt", "completion"):
        assert value(after, "portal_tokens_total", model=LLAMA, kind=kind) > value(
            before, "portal_tokens_total", model=LLAMA, kind=kind
        )


def test_an_unknown_model_is_counted_without_the_name_the_client_typed(client, catalog, alice_key):
    _, raw = alice_key
    before = scrape(client)
    body = {"model": "made-up/model-x1", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 404
    after = scrape(client)
    labels = {"model": "-", "endpoint": "chat.completions", "outcome": "client_error"}
    assert (
        value(after, "portal_requests_total", **labels)
        == value(before, "portal_requests_total", **labels) + 1
    )
    assert "made-up/model-x1" not in client.get("/metrics").content.decode()


def test_a_stream_is_in_flight_until_it_ends(client, catalog, alice_key):
    _, raw = alice_key
    before = scrape(client)
    response = chat(client, raw, stream=True)
    chunks = iter(response.streaming_content)
    next(chunks)  # the stream has started
    during = scrape(client)
    assert (
        value(during, "portal_streams_in_flight") == value(before, "portal_streams_in_flight") + 1
    )
    b"".join(chunks)
    response.close()
    after = scrape(client)
    assert value(after, "portal_streams_in_flight") == value(before, "portal_streams_in_flight")
    labels = {"endpoint": "chat.completions", "streamed": "true"}
    assert (
        value(after, "portal_request_duration_seconds_count", **labels)
        == value(before, "portal_request_duration_seconds_count", **labels) + 1
    )


def test_router_health_follows_the_catalog(client, catalog):
    router = str(catalog["router"].pk)
    assert value(scrape(client), "portal_router_up", pool="default", router=router) == 1.0
    Router.objects.filter(pk=catalog["router"].pk).update(health=Router.Health.UNHEALTHY)
    bump_version()
    samples = scrape(client)
    assert ("portal_router_up", (("pool", "default"), ("router", router))) in samples
    assert value(samples, "portal_router_up", pool="default", router=router) == 0.0


def test_a_failed_router_call_is_observed_with_its_status(client, catalog, alice_key):
    _, raw = alice_key
    with RouterSim("--error-rate", "1") as failing:
        Router.objects.filter(pk=catalog["router"].pk).update(base_url=failing.url)
        bump_version()
        before = scrape(client)
        assert chat(client, raw).status_code == 503
        after = scrape(client)
    router = str(catalog["router"].pk)
    assert value(after, "portal_upstream_latency_seconds_count", router=router, result="503") > (
        value(before, "portal_upstream_latency_seconds_count", router=router, result="503")
    )
    labels = {"model": LLAMA, "endpoint": "chat.completions", "outcome": "upstream_error"}
    assert (
        value(after, "portal_requests_total", **labels)
        == value(before, "portal_requests_total", **labels) + 1
    )


def test_a_router_call_that_got_no_answer_is_observed_as_an_error(client, catalog, alice_key):
    _, raw = alice_key
    dead = RouterSim()
    dead.stop()  # connection refused: no status to label the call with
    Router.objects.filter(pk=catalog["router"].pk).update(base_url=dead.url)
    bump_version()
    before = scrape(client)
    assert chat(client, raw).status_code == 503
    after = scrape(client)
    router = str(catalog["router"].pk)
    assert value(after, "portal_upstream_latency_seconds_count", router=router, result="error") == (
        value(before, "portal_upstream_latency_seconds_count", router=router, result="error") + 1
    )


# --- multiprocess: gunicorn with two workers ---------------------------------------------


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    sim = RouterSim()
    database_url, key = provision(sim, email="metrics@example.com")
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    server = Gunicorn(
        database_url=database_url, workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    )
    yield server, key, metrics_dir
    server.stop()
    sim.stop()


def _post_many(url: str, key: str, count: int) -> list[int]:
    statuses: list[int] = []
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    ).encode()

    def one():
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # a connection each
                statuses.append(response.status)
        except OSError as exc:  # HTTPError and timeouts: show them in the assertion
            statuses.append(getattr(exc, "code", exc.__class__.__name__))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _scrape(url: str, **headers) -> dict:
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}/metrics", headers=headers), timeout=10
    ) as response:
        return parse(response.read().decode())


@pytest.mark.slow
def test_two_workers_report_one_sum(two_workers):
    server, key, metrics_dir = two_workers
    assert len(server.worker_pids()) == 2
    statuses = _post_many(server.url, key, 60)
    assert statuses == [200] * 60, server.output()[-4000:]
    labels = {"model": MODEL, "endpoint": "chat.completions", "outcome": "ok"}
    # Both workers served some of them (each writes its own file)...
    writers = {p.name.rsplit("_", 1)[1] for p in Path(metrics_dir).glob("counter_*.db")}
    assert len(writers) == 2, writers
    # ...and every scrape, whichever worker answers it, sums both.
    for _ in range(6):
        assert value(_scrape(server.url), "portal_requests_total", **labels) == 60


@pytest.mark.slow
def test_a_dead_workers_streams_stop_counting(two_workers):
    server, _, metrics_dir = two_workers
    victim = server.worker_pids()[0]
    # A live gauge file as the worker would leave it with a stream open when killed.
    code = (
        "import os, sys; os.environ['PROMETHEUS_MULTIPROC_DIR'] = sys.argv[1];"
        "from prometheus_client import Gauge, values;"
        f"values.ValueClass = values.MultiProcessValue(lambda: {victim});"
        "Gauge('portal_streams_in_flight', 'x', multiprocess_mode='livesum').inc(3)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(metrics_dir)],
        check=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    assert value(_scrape(server.url), "portal_streams_in_flight") == 3
    os.kill(victim, 9)
    # gunicorn notices the dead worker, runs child_exit (mark_process_dead) and replaces it.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if victim not in pids and len(pids) == 2:
            break
        time.sleep(0.2)
    assert value(_scrape(server.url), "portal_streams_in_flight") == 0


@pytest.mark.slow
def test_gunicorn_refuses_metrics_to_a_client_behind_a_proxy(two_workers):
    server, _, _ = two_workers
    request = urllib.request.Request(
        f"{server.url}/metrics", headers={"X-Forwarded-For": "198.51.100.7"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
