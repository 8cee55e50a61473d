"""Pooled connections under gevent: a connection is reused while it is quiet, and one its peer
closed is replaced before it carries the next command or request.

The portal asks that question of the operating system's poll rather than gevent's
(core/sockets.py: the Redis parser in core/redis.py, the router pool in inference/upstream.py);
neither client retries (a command or a completion must not run twice), so a stale connection
that slipped through would fail the call. gevent must patch the process before anything else
is imported, so each scenario runs in a fresh interpreter, as the workers do."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from core.redis import redis_from_url
from tests.routersim import run_portal_script

PRELUDE = r"""
from gevent import monkey

monkey.patch_all()

import socket
import sys
import threading
import time

import django

django.setup()
"""

SOCKETS = r"""
from core.sockets import readable_now

left, right = socket.socketpair()
assert not readable_now(left), "quiet"
right.sendall(b"x")
time.sleep(0.05)
assert readable_now(left), "data waiting"
left.recv(1)
assert not readable_now(left), "quiet again"
right.close()
time.sleep(0.05)
assert readable_now(left), "peer closed"
print("ok")
"""

REDIS = r"""
import os

import redis

from core.redis import redis_from_url

url = os.environ["REDIS_URL"]
client = redis_from_url(url, cluster=False, max_connections=1)  # the one connection in question
first = client.client_id()
assert client.client_id() == first, "a quiet connection is reused"

# The server closes it (as after a restart, or its idle timeout): the next command goes out on
# a new connection instead of failing.
redis.Redis.from_url(url).client_kill_filter(_id=first)
time.sleep(0.1)
second = client.client_id()
assert second != first, (first, second)
assert client.client_id() == second
print("ok")
"""

LANE = r"""
import os

import gevent
import redis

from core.redis import direct_lane, redis_from_url

url = os.environ["REDIS_URL"]
lane = direct_lane(redis_from_url(url, cluster=False))
first = lane.execute("CLIENT", "ID")
assert lane.execute("CLIENT", "ID") == first, "a quiet connection is reused"

# The server closes it: the next command goes out on a new connection instead of failing.
redis.Redis.from_url(url).client_kill_filter(_id=first)
deadline = time.monotonic() + 10
while f"id={first} ".encode() in redis.Redis.from_url(url).execute_command("CLIENT", "LIST"):
    assert time.monotonic() < deadline, "the server did not close the connection"
    time.sleep(0.01)
second = lane.execute("CLIENT", "ID")
assert second != first, (first, second)

# A command interrupted before its reply (a gevent timeout) leaves no reply behind for the
# next command on that connection: it would read the BLPOP's nil here, a second later.
try:
    with gevent.Timeout(0.05):
        lane.execute("BLPOP", "portal-test:lane:nothing", 1)
except gevent.Timeout:
    pass
else:
    raise AssertionError("BLPOP returned early")
assert lane.execute("ECHO", "after") == b"after"
print("ok")
"""

ROUTER = r"""
from inference import upstream

accepted = []


def serve(listener):
    while True:
        conn, _ = listener.accept()
        accepted.append(conn)
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def answer(conn):
    while True:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        close = b"/close" in data.split(b"\r\n", 1)[0]
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if close:  # keep-alive promised, then the router closes it anyway
            time.sleep(0.05)
            conn.close()
            return


listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
threading.Thread(target=serve, args=(listener,), daemon=True).start()
base = f"http://127.0.0.1:{listener.getsockname()[1]}"

for _ in range(3):
    assert upstream.pool().request("POST", f"{base}/keep", body=b"{}").data == b"ok"
assert len(accepted) == 1, f"a quiet connection is reused: {len(accepted)} connections"

assert upstream.pool().request("POST", f"{base}/close", body=b"{}").data == b"ok"
time.sleep(0.2)
assert upstream.pool().request("POST", f"{base}/keep", body=b"{}").data == b"ok"
assert len(accepted) == 2, f"a closed connection is replaced: {len(accepted)} connections"
print("ok")
"""


def run(script: str, **extra: str) -> None:
    assert run_portal_script(PRELUDE + script, **extra).strip().endswith("ok")


def test_readable_now_tells_a_quiet_socket_from_data_and_a_closed_peer():
    run(SOCKETS)


@pytest.mark.skipif(
    not settings.REDIS_URL or getattr(settings, "REDIS_CLUSTER", False),
    reason="a single Redis: a cluster's node connections keep redis-py's own check",
)
def test_a_redis_connection_the_server_closed_is_replaced():
    run(REDIS, REDIS_URL=settings.REDIS_URL)


@pytest.mark.skipif(
    not settings.REDIS_URL or getattr(settings, "REDIS_CLUSTER", False),
    reason="a single Redis: on a cluster the limits take the cluster client",
)
def test_the_direct_lane_replaces_a_closed_connection_and_drops_an_interrupted_one():
    run(LANE, REDIS_URL=settings.REDIS_URL)


def test_a_router_connection_the_router_closed_is_replaced():
    run(ROUTER)


@pytest.mark.skipif(
    not settings.REDIS_URL or getattr(settings, "REDIS_CLUSTER", False),
    reason="a single Redis: the client's own pool",
)
def test_a_pooled_redis_connection_holding_an_unread_reply_is_not_handed_out():
    """redis-py 8 skips this check while maintenance notices are on (its default); the
    portal's clients turn them off (core/redis.py)."""
    client = redis_from_url(settings.REDIS_URL, cluster=False, max_connections=1)
    pool = client.connection_pool
    connection = pool.get_connection()
    connection.send_command("ECHO", "stale")  # and its reply never read
    deadline = time.monotonic() + 10
    while not connection.can_read():
        assert time.monotonic() < deadline, "no reply from Redis"
    pool.release(connection)
    assert client.echo("fresh") == b"fresh"
    client.close()
