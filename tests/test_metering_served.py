"""Metering on the production shape: gunicorn (gevent), the batched writer, PostgreSQL and
Redis. A concurrency slot is free by the time the client has its whole answer, and a stream
longer than the in-flight lease keeps its slot and its admission journal entry, so that the
record written at its end is the real one.

Needs PostgreSQL and Redis (CI has both); skipped on the embedded default.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from tests.routersim import RouterSim
from tests.servehelpers import (
    MODEL,
    Gunicorn,
    config_file,
    manage,
    manage_many,
    served_database,
)

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="served metering tests run real processes on PostgreSQL and Redis",
    ),
]


def provision_capped(sim: RouterSim, *, email: str, cap: int) -> tuple[str, str]:
    """A pool holding only `sim`, a plan allowing `cap` requests in flight, and a key on it."""
    db = served_database()
    pool = email.split("@")[0]
    plan = f"cap-{pool}"
    config = {
        "plans": [
            {"name": plan, "models": ["*"], "max_concurrent_requests": cap, "default": False}
        ],
        "pools": [
            {"name": pool, "routers": [{"url": sim.url, "session_id": 1, "token": sim.token}]}
        ],
        "models": [{"id": MODEL, "pool": pool, "max_tokens": 1024}],
    }
    with config_file(config) as path:  # one process for both commands: a Django start each
        _, key = manage_many(
            ["apply_config", path],
            ["apikey_create", "--email", email, "--name", "k", "--create-user", "--plan", plan],
            database_url=db,
        )
    return db, key.strip()


def _records(db_url: str, email: str, *, expect: int, timeout: float = 10.0) -> list[dict]:
    """This user's records, once `expect` of them are in (the writer flushes every 50 ms)."""
    import psycopg
    from psycopg.rows import dict_row

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT r.* FROM metering_usagerecord r JOIN accounts_user u ON u.id = r.user_id "
                "WHERE u.email = %s ORDER BY r.id",
                [email],
            ).fetchall()
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _post(url: str, key: str, *, stream: bool, max_tokens: int = 16) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        json={
            "model": MODEL,
            "stream": stream,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
        },
        # A kept response holds its keep-alive connection open (closing it or its session does
        # not), and a gevent worker stopping gracefully waits for every open connection: the
        # server closes each one after its answer instead of at keep-alive's timeout.
        headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        stream=stream,
        timeout=30,
    )


def _data_lines(response: requests.Response):
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            yield line[6:]


def test_sequential_calls_under_a_cap_of_one_are_all_admitted():
    """The slot used to be freed by the batch writer, a flush after the answer: the next call
    of a strictly sequential client then found it still taken (429)."""
    email = "cap-sequential@example.com"
    with RouterSim("--chunks", "3") as sim:
        db, key = provision_capped(sim, email=email, cap=1)
        server = Gunicorn(database_url=db, USAGE_WRITE_BATCHED="1")
        try:
            statuses = []
            for i in range(20):
                stream = i % 2 == 1
                response = _post(server.url, key, stream=stream)
                if stream and response.status_code == 200:
                    assert list(_data_lines(response))[-1] == b"[DONE]"
                else:
                    response.json()
                statuses.append(response.status_code)
                response.close()
        finally:
            server.stop()
    assert statuses == [200] * 20, statuses
    records = _records(db, email, expect=20)
    assert len(records) == 20
    assert all(r["outcome"] == "ok" and r["total_tokens"] > 0 for r in records)


def test_a_stream_longer_than_the_lease_keeps_its_slot_and_its_real_record():
    """With a 2 s lease, a 6 s stream used to lose its slot (a second call got a 200 under a
    cap of 1) and its journal entry fell due: the reconcile wrote a "request_lost" record and
    the real one was then dropped as a duplicate."""
    email = "cap-long-stream@example.com"
    with RouterSim("--chunks", "60", "--chunk-delay-ms", "100") as sim:
        db, key = provision_capped(sim, email=email, cap=1)
        server = Gunicorn(database_url=db, LIMITS_INFLIGHT_LEASE_SECONDS="2")
        try:
            response = _post(server.url, key, stream=True, max_tokens=500)
            request_id = response.headers["x-request-id"]
            lines = _data_lines(response)
            opened = time.monotonic()
            while time.monotonic() - opened < 4.5:  # well past two leases
                assert next(lines) != b"[DONE]"
            second = _post(server.url, key, stream=False)
            assert second.status_code == 429, second.text
            assert second.json()["error"]["code"] == "rate_limit_exceeded"
            # What beat runs every 30 s: nothing of the live stream's is due.
            manage("metering_reconcile", database_url=db)
            assert list(lines)[-1] == b"[DONE]"
            response.close()
            third = _post(server.url, key, stream=False)
            assert third.status_code == 200, third.text
        finally:
            server.stop()
    records = {r["request_id"]: r for r in _records(db, email, expect=3)}
    streamed = records[request_id]
    assert (streamed["outcome"], streamed["error_code"], streamed["streamed"]) == ("ok", "", True)
    assert streamed["completion_tokens"] > 0
