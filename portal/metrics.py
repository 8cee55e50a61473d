"""The `/metrics` view: the metrics of `core.metrics` plus router health read at scrape time.

Under gunicorn every worker is its own process, so counters live in prometheus_client's
multiprocess mode (see `core.metrics`) and a scrape, answered by whichever worker gets it,
sums them.

`/metrics` is not public: with METRICS_TOKEN set it wants `Authorization: Bearer <token>`;
without it, only direct loopback clients (no proxy headers) get an answer.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from catalog.routing import routing_table
from core.metrics import MULTIPROCESS
from inference import balancer


class RouterHealthCollector:
    """Router health as the catalog holds it, read at scrape time (the Celery probe writes it),
    so every worker reports the same thing and no stale per-process gauge survives."""

    def collect(self):
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
    token = settings.METRICS_TOKEN
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
