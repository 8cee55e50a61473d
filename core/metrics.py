"""Prometheus metric primitives: the counters and histograms every layer observes into.

Under gunicorn every worker is its own process, so counters live in prometheus_client's
multiprocess mode: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports
this module, each worker writes its values to files there, and a scrape (answered by whichever
worker gets it) sums them. Without that variable (the embedded default, tests, Celery) the
ordinary in-process registry is used.

Label values are bounded on purpose: `model` is a catalog model or "-" (never what a client
typed), `router` is a router id from the catalog.

The `/metrics` view and the scrape-time collectors that read the catalog live in
`portal/metrics.py`, on top of the stack.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

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


# Each metric's children by label values: `labels()` checks and joins the values and takes a
# lock on every call (~1.2 us, five a request); a child is the same object every time.
_children: dict[tuple, Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


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
        _child(REQUESTS, model, endpoint, outcome).inc()
        kind = "true" if streamed else "false"
        _child(REQUEST_LATENCY, endpoint, kind).observe(seconds)
        if ttfb_ms is not None:
            _child(TIME_TO_FIRST_BYTE, endpoint, kind).observe(ttfb_ms / 1000)
        if prompt_tokens:
            _child(TOKENS, model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            _child(TOKENS, model, "completion").inc(completion_tokens)
    except Exception:  # noqa: S110 - a metrics bug must never break a request
        pass
