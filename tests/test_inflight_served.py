"""Requests in flight per router, on the production shape: two gunicorn (gevent) workers each
publish their own counts, and the operator's figure is their sum. Streams held open through
both workers count N; once they end, 0.

Needs Redis (the workers share their figures through it); skipped on the embedded default.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from inference import inflight
from inference.balancer import routers_in_flight
from tests.routersim import RouterSim
from tests.servehelpers import MODEL, SERVED_KEY_PREFIX, Gunicorn, db_query, provision

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="workers share through Redis"),
]

MAX_STREAMS = 20


def _until(condition, what: str, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def _open_stream(url: str, key: str) -> requests.Response:
    response = requests.post(
        f"{url}/v1/chat/completions",
        json={
            "model": MODEL,
            "stream": True,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=30,
    )
    # The router is picked before the answer's headers: from here the request is in flight.
    assert response.status_code == 200, response.text
    return response


def test_streams_open_through_both_workers_are_counted_once_each_then_not(settings):
    settings.LIMITS_KEY_PREFIX = SERVED_KEY_PREFIX  # read the served deployment's figures
    # A stream of 1000 tokens, one every 50 ms: open until the client hangs up.
    with RouterSim("--chunks", "1000", "--chunk-delay-ms", "50") as sim:
        db, key = provision(sim, email="inflight-served@example.com")
        (router,) = db_query(
            db,
            "SELECT r.id FROM catalog_router r JOIN catalog_routerpool p ON p.id = r.pool_id "
            "WHERE p.name = %s",
            [f"sim-{sim.port}"],
        )
        router_id = router["id"]

        def holding() -> dict[str, int]:
            """Streams on this router per live worker."""
            processes = inflight.inflight_by_process()
            return {p: c[router_id] for p, c in processes.items() if c.get(router_id)}

        server = Gunicorn(database_url=db, workers=2)
        streams: list[requests.Response] = []
        try:
            # Which worker accepts a connection is the kernel's choice: open streams until
            # both hold some (each worker's figure alone would then be short of the total).
            while True:
                streams.extend(_open_stream(server.url, key) for _ in range(4))
                _until(
                    lambda: sum(holding().values()) == len(streams),
                    f"the workers never published {len(streams)} in flight: {holding()}",
                )
                if len(holding()) == 2 or len(streams) >= MAX_STREAMS:
                    break
            per_worker = holding()
            assert len(per_worker) == 2, per_worker
            assert sum(per_worker.values()) == len(streams)
            assert routers_in_flight().of(router_id) == len(streams)  # what the pages read

            for response in streams:  # the clients hang up: each stream ends at its next chunk
                response.close()
            _until(
                lambda: routers_in_flight().of(router_id) == 0,
                f"requests still in flight after every client left: {holding()}",
            )
        finally:
            for response in streams:
                response.close()
            server.stop()
