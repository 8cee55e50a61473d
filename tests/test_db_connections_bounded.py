"""With hundreds of streams open through one gevent worker, PostgreSQL sees no more of the
worker's connections than DB_POOL_MAX_SIZE, and every stream still gets its usage record."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from tests.routersim import RouterSim
from tests.servehelpers import MODEL, Gunicorn
from tests.test_faults import _records, provision

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="measures PostgreSQL connections of a real gunicorn worker (CI has PostgreSQL)",
    ),
]

STREAMS = 500
POOL = 4


async def _one_stream(port: int, key: str) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(-1), timeout=120)
    writer.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    request_id = next(
        (
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("x-request-id:")
        ),
        "",
    )
    return b"data: [DONE]" in data, request_id


async def _many(port: int, key: str):
    return await asyncio.gather(*(_one_stream(port, key) for _ in range(STREAMS)))


def test_500_open_streams_use_at_most_the_pool_bound():
    import psycopg

    sim = RouterSim("--chunks", "20", "--chunk-delay-ms", "150")
    db, key = provision(sim, email="pool-bound@example.com")
    server = Gunicorn(
        database_url=db,
        workers=1,
        DB_POOL_MAX_SIZE=str(POOL),
        DB_POOL_MIN_SIZE="1",
        WORKER_CONNECTIONS="2000",
    )
    (worker,) = server.worker_pids()
    peak = 0
    done = threading.Event()

    def watch():
        nonlocal peak
        with psycopg.connect(db, autocommit=True) as conn:
            while not done.is_set():
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
                peak = max(peak, count)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = asyncio.run(_many(server.port, key))
    finally:
        done.set()
        watcher.join()
        server.stop()
        sim.stop()
    assert worker
    assert all(ok for ok, _ in results), sum(1 for ok, _ in results if not ok)
    ids = [rid for _, rid in results]
    assert len(set(ids)) == STREAMS
    assert len(_records(db, "request_id = ANY(%s)", [ids], expect=STREAMS)) == STREAMS
    print(f"peak PostgreSQL connections with {STREAMS} streams open: {peak} (bound {POOL})")
    assert 1 <= peak <= POOL
