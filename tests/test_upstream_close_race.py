"""Ending a stream while its reader greenlet is blocked on the router's socket.

A stream's router answer is read on its own greenlet (inference.services._pump). When the
client side ends first (a client cut off after the write timeout, a disconnect), the stream's
generator closes the upstream response while that greenlet is blocked inside the response's
buffered socket reader. Closing the reader then raised "reentrant call inside
BufferedReader": the router kept generating into an open connection and, the exception
escaping the generator's cleanup, the usage record was never written.

gevent must patch the process before anything else is imported, so the scenario runs in a
fresh interpreter."""

from __future__ import annotations

from tests.routersim import run_portal_script

SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import os
import socket
import sys
import threading

import django

django.setup()

from inference import upstream

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]
router_saw_end = threading.Event()


def router():
    conn, _ = listener.accept()
    conn.recv(65536)
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n10\r\ndata: {\"a\": 1}\n\n\r\n"
    )
    conn.settimeout(30)
    try:
        while conn.recv(1):  # still generating, until its connection ends
            pass
    except TimeoutError:
        return  # still open: not an end
    except OSError:
        pass  # reset: an end
    router_saw_end.set()


threading.Thread(target=router, daemon=True).start()
response = upstream.pool().request(
    "POST", f"http://127.0.0.1:{port}/x", body=b"{}", preload_content=False, retries=False
)
up = upstream.Upstream(
    router=type("Router", (), {"id": 1})(), response=response, deadline=0.0
)


first_chunk = threading.Event()


def pump():
    try:
        for _ in response.stream(1024):
            first_chunk.set()
    except Exception:
        pass


threading.Thread(target=pump, daemon=True).start()
# Greenlets: this one runs again only once the reader has blocked in its next read (the router
# sends nothing after the first chunk).
if not first_chunk.wait(10):
    print("no first chunk")
    sys.exit(3)
try:
    up.close()
except Exception as exc:
    print(f"close raised {exc!r}")
    sys.exit(1)
if not router_saw_end.wait(20):
    print("the router's connection stayed open")
    sys.exit(2)
print("closed")
"""


def test_closing_a_stream_while_its_reader_waits_on_the_router():
    assert run_portal_script(SCRIPT).strip().endswith("closed")
