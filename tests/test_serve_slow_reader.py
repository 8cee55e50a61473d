"""A client that stops reading a stream cannot hold a worker's greenlet (and the router behind
it) forever: on the served stack (gunicorn, gevent), a streamed write the client does not take
within STREAM_WRITE_TIMEOUT_SECONDS ends the stream, closes the upstream request and records
the usage of what was delivered."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from urllib.parse import urlparse

import requests

from tests.routersim import RouterSim
from tests.servehelpers import Gunicorn, config_file, manage_many, served_database

MODEL = "cortensor/slow-reader"
# Enough stream to fill the kernel's socket buffers between the portal and a client that
# stopped reading (a few MB on loopback): ~150 bytes an event.
CHUNKS = 120_000
WRITE_TIMEOUT = 2  # STREAM_WRITE_TIMEOUT_SECONDS of the served portal
# Once the portal has written nothing more to the stalled client for this long, it must have
# ended the stream: the write timeout, with room for a loaded machine to write the record.
ENDED_WITHIN = WRITE_TIMEOUT * 15
# Filling the socket buffers (a few MB) takes as long as the machine needs; only a portal that
# kept writing to a client that reads nothing for this long is a failure of its own.
FILL_LIMIT = 600


def _provision(sim: RouterSim) -> tuple[str, str]:
    db = served_database()
    config = {
        "plans": [{"name": "served", "models": ["*"], "default": True}],
        "pools": [
            {
                "name": "slow-reader",
                "routers": [{"url": sim.url, "session_id": 1, "token": sim.token}],
            }
        ],
        "models": [
            {
                "id": MODEL,
                "pool": "slow-reader",
                "max_tokens": CHUNKS,
                "context_length": CHUNKS + 1000,
            }
        ],
    }
    with config_file(config) as path:  # one process for both commands: a Django start each
        _, key = manage_many(
            ["apply_config", path],
            ["apikey_create", "--email", "slow-reader@example.com", "--name", "k", "--create-user"],
            database_url=db,
        )
    return db, key.strip()


def _record(db: str, request_id: str) -> dict | None:
    query = (
        "SELECT outcome, http_status, completion_tokens FROM metering_usagerecord "
        "WHERE request_id = %s"
    )
    if db.startswith("sqlite"):
        with sqlite3.connect(urlparse(db).path) as conn:
            row = conn.execute(query.replace("%s", "?"), [request_id]).fetchone()
    else:
        import psycopg

        with psycopg.connect(db) as conn:
            row = conn.execute(query, [request_id]).fetchone()
    return (
        dict(zip(("outcome", "http_status", "completion_tokens"), row, strict=True))
        if row
        else None
    )


def _stalled_stream(port: int, key: str) -> tuple[socket.socket, str]:
    """Open a stream, read its headers and first bytes, then never read again."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": CHUNKS,
            "messages": [{"role": "user", "content": "everything, please"}],
        }
    ).encode()
    client.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    client.settimeout(30)
    head = b""
    while b"\r\n\r\n" not in head:
        head += client.recv(1024)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    request_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    )
    return client, request_id


def _unsent(server_port: int, client: socket.socket) -> int | None:
    """Bytes the portal has written to this client's connection that the client has not
    taken (the server end's send queue, from /proc/net/tcp); None once that end is closed."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (
                int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == client_port
                and state == "01"  # ESTABLISHED: the portal has not closed its end
            ):
                return int(fields[4].split(":")[0], 16)
    return None


def _wait_until_ended(db: str, request_id: str, server_port: int, client: socket.socket) -> dict:
    """The stalled stream's usage record, once the portal ended the stream. However long the
    kernel's buffers take to fill on a loaded machine, once the portal's writes stop moving
    (its send queue stays the same) the write timeout must end the stream within
    ENDED_WITHIN."""
    give_up = time.monotonic() + FILL_LIMIT
    last, moved_at = None, time.monotonic()
    while (record := _record(db, request_id)) is None:
        now = time.monotonic()
        unsent = _unsent(server_port, client)
        if unsent != last:
            last, moved_at = unsent, now
        assert now - moved_at < ENDED_WITHIN, (
            f"the portal closed the stalled stream {now - moved_at:.0f} s ago without a record"
            if unsent is None
            else f"the stalled stream was never ended: the portal's writes stopped "
            f"{now - moved_at:.0f} s ago ({unsent} bytes unsent), past the {WRITE_TIMEOUT} s "
            "write timeout"
        )
        assert now < give_up, f"the portal was still writing after {FILL_LIMIT} s"
        time.sleep(0.2)
    return record


def _sim_in_flight(sim: RouterSim) -> int:
    return requests.get(f"{sim.url}/api/v1/status", headers=sim.headers, timeout=5).json()[
        "in_flight"
    ]


def test_a_client_that_stops_reading_is_cut_off_and_billed():
    sim = RouterSim("--chunks", str(CHUNKS))
    try:
        db, key = _provision(sim)
        server = Gunicorn(
            database_url=db, workers=1, STREAM_WRITE_TIMEOUT_SECONDS=str(WRITE_TIMEOUT)
        )
        try:
            client, request_id = _stalled_stream(server.port, key)
            try:
                # The client holds its socket open and reads nothing more; the portal must
                # give up on it by itself.
                record = _wait_until_ended(db, request_id, server.port, client)
                assert record["outcome"] == "cancelled"
                assert 0 < record["completion_tokens"] < CHUNKS
                deadline = time.monotonic() + ENDED_WITHIN
                while _sim_in_flight(sim):  # and the router's request was closed
                    assert time.monotonic() < deadline, "the router request stayed open"
                    time.sleep(0.2)
            finally:
                client.close()
            # The worker is free for the next customer.
            answer = requests.post(
                f"{server.url}/v1/chat/completions",
                # The answer is kept: its keep-alive connection would stay open, and the
                # worker's graceful stop below would wait out keep-alive's timeout for it.
                headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                json={
                    "model": MODEL,
                    "max_tokens": 3,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                timeout=30,
            )
            assert answer.status_code == 200
            # Cutting off a slow reader is routine: logged in a line, not as an error.
            log = server.output()
            assert "disconnected after the write timeout" in log
            assert "TimeoutError" not in log
        finally:
            server.stop()
    finally:
        sim.stop()
