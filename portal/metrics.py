"""Prometheus metrics and the `/metrics` view.

Under gunicorn every worker is its own process, so counters live in prometheus_client's
multiprocess mode: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports
this module, each worker writes its values to files there, and a scrape (answered by whichever
worker gets it) sums them. Without that variable (the embedded default, tests, Celery) the
ordinary in-process registry is used.

Label values are bounded on purpose: `model` is a catalog model or "-" (never what a client
typed), `router` is a router id from the catalog.

`/metrics` is not public: with METRICS_TOKEN set it wants `Authorization: Bearer <token>`;
without it, only direct loopback clients (no proxy headers) get an answer.
"""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Milliseconds matter for a gateway's overhead; minutes matter for long generations.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "portal_requests",
    "Completion API requests by public model, endpoint and outcome (ok, rate_limited, ...).",
    ["model", "endpoint", "outcome"],
)
REQUEST_LATENCY = Histogram(
    "portal_request_duration_seconds",
    "From the request reaching the view to its end (last SSE chunk for streams).",
    ["endpoint", "streamed"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_BYTE = Histogram(
    "portal_time_to_first_byte_seconds",
    "From the request reaching the view to the router's answer headers.",
    ["endpoint", "streamed"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_LATENCY = Histogram(
    "portal_upstream_latency_seconds",
    "One router call: POST sent to response headers received (failed attempts included).",
    ["router", "result"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter(
    "portal_tokens",
    "Tokens metered, by public model and kind (prompt, completion).",
    ["model", "kind"],
)
STREAMS_IN_FLIGHT = Gauge(
    "portal_streams_in_flight",
    "SSE streams open right now (summed over live workers).",
    multiprocess_mode="livesum",
)
USAGE_QUARANTINED = Counter(
    "portal_usage_quarantined",
    "Usage records the database refused, kept in QuarantinedUsage (admin) for an operator.",
)
USAGE_WRITE_FAILURES = Counter(
    "portal_usage_write_failures",
    "Usage records that could not be written (logged with the request id for replay).",
)


def request_ended(
    *,
    model: str,
    endpoint: str,
    outcome: str,
    streamed: bool,
    seconds: float,
    ttfb_ms: int | None,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    """Observe one completion request at its end; never raises (metrics must not fail calls)."""
    try:
        model = model or "-"
        REQUESTS.labels(model, endpoint, outcome).inc()
        kind = "true" if streamed else "false"
        REQUEST_LATENCY.labels(endpoint, kind).observe(seconds)
        if ttfb_ms is not None:
            TIME_TO_FIRST_BYTE.labels(endpoint, kind).observe(ttfb_ms / 1000)
        if prompt_tokens:
            TOKENS.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            TOKENS.labels(model, "completion").inc(completion_tokens)
    except Exception:  # noqa: S110 - a metrics bug must never break a request
        pass


class RouterHealthCollector:
    """Router health as the catalog holds it, read at scrape time (the Celery probe writes it),
    so every worker reports the same thing and no stale per-process gauge survives."""

    def collect(self):
        from catalog.routing import routing_table
        from inference import balancer

        up = GaugeMetricFamily(
            "portal_router_up",
            "1 when the router's last health probe succeeded.",
            labels=["pool", "router"],
        )
        breaker = GaugeMetricFamily(
            "portal_router_breaker_open",
            "1 when this worker's circuit breaker for the router is open.",
            labels=["pool", "router"],
        )
        try:
            table = routing_table()
        except Exception:
            return
        pools = {m.pool_id: m.pool_name for m in table.models.values()}
        for pool_id, routers in table.routers.items():
            pool = pools.get(pool_id, str(pool_id))
            for router in routers:
                up.add_metric([pool, str(router.id)], 1.0 if router.health == "healthy" else 0.0)
                breaker.add_metric(
                    [pool, str(router.id)],
                    0.0 if balancer.breaker_state(router.id) == "closed" else 1.0,
                )
        yield up
        yield breaker


def render() -> bytes:
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    scrape_time = CollectorRegistry()
    scrape_time.register(RouterHealthCollector())
    return body + generate_latest(scrape_time)


_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def metrics_allowed(request) -> bool:
    token = getattr(settings, "METRICS_TOKEN", None)
    if token:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        )
    # A reverse proxy on the same host makes every client look like 127.0.0.1: a request
    # that came through one (it adds these headers) is not a loopback client.
    if any(request.META.get(name) for name in _PROXY_HEADERS):
        return False
    return request.META.get("REMOTE_ADDR") in _LOOPBACK


@never_cache
def metrics_view(request):
    if not metrics_allowed(request):
        return HttpResponseForbidden(
            "metrics are not public: send Authorization: Bearer "
            "$METRICS_TOKEN, or scrape from the host itself\n",
            content_type="text/plain",
        )
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
