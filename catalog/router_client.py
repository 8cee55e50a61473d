"""What the layer that talks to routers lends the catalog's admin: a probe, breaker states and
requests in flight.

The catalog sits below inference and does not import it. Inference registers its probe and
its circuit breaker here when Django starts (`InferenceConfig.ready`), and the admin asks
through these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from catalog.models import Router

_probe: Callable[..., Router] | None = None
_breaker_state: Callable[[int], str] | None = None
_figures: Callable[[], dict] | None = None
_in_flight: Callable[[], Any] | None = None


def register_router_client(
    *,
    probe: Callable[..., Router],
    breaker_state: Callable[[int], str],
    in_flight: Callable[[], Any] | None = None,
) -> None:
    global _probe, _breaker_state, _in_flight
    _probe, _breaker_state, _in_flight = probe, breaker_state, in_flight


def router_probe(*, router: Router) -> Router:
    if _probe is None:
        raise RuntimeError("no router client registered: is `inference` in INSTALLED_APPS?")
    return _probe(router=router)


def breaker_state(router_id: int) -> str:
    """This process's circuit breaker state for the router, or "unknown" without a client."""
    return _breaker_state(router_id) if _breaker_state is not None else "unknown"


def register_router_figures(figures: Callable[[], dict]) -> None:
    """`figures()` -> {router id: object with requests, errors, latency_p50_ms}: the last 5
    minutes across every worker (ops registers the status rollup's)."""
    global _figures
    _figures = figures


def router_figures() -> dict:
    return _figures() if _figures is not None else {}


def router_in_flight() -> Any | None:
    """Requests in flight per router (`.of(router_id)`, `.this_process_only`): every worker's,
    or this process's without Redis; None without a client."""
    return _in_flight() if _in_flight is not None else None
