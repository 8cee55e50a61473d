"""Helpers for the notification suites: counters driven through the real limits engine, a real
local HTTP receiver that checks Stripe-style signatures, and waiting on a condition."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apikeys.services import apikey_authenticate
from catalog.routing import PlanInfo
from metering.limits import limits_admit


def plan_info(plan) -> PlanInfo:
    return PlanInfo(
        id=plan.pk,
        name=plan.name,
        requests_per_minute=None,
        tokens_per_minute=None,
        requests_per_day=plan.requests_per_day,
        tokens_per_day=plan.tokens_per_day,
        requests_per_month=plan.requests_per_month,
        tokens_per_month=plan.tokens_per_month,
        max_concurrent_requests=None,
        all_models=True,
    )


def use(raw_key: str, plan, n: int, *, now_ms: int | None = None, tokens: int = 0) -> None:
    """Admit and settle `n` requests of the key through the limits engine (Redis or memory),
    as /v1/ does: the plan's day and month counters move."""
    principal = apikey_authenticate(raw_key=raw_key)
    for _ in range(n):
        admission = limits_admit(
            principal=principal,
            plan=plan_info(plan),
            reserve_tokens=tokens,
            request_id=uuid.uuid4().hex,
            _now_ms=now_ms,
        )
        admission.settle(total_tokens=tokens, _now_ms=now_ms)


def wait_until(condition, *, timeout: float = 20.0, interval: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(interval)


class Receiver:
    """A webhook receiver on 127.0.0.1: answers the scripted statuses in order (then 200) and
    records every delivery with whether its signature checks out against `secret`."""

    def __init__(self, statuses=(), secret: str = ""):
        self.statuses = list(statuses)
        self.secret = secret
        self.received: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append(
                        {
                            "headers": dict(self.headers),
                            "body": body,
                            "event": json.loads(body),
                            "verified": receiver.verify(
                                self.headers.get("Cortensor-Signature", ""), body
                            ),
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cortensor"

    def verify(self, header: str, body: bytes) -> bool:
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        if "t" not in parts or "v1" not in parts:
            return False
        if abs(time.time() - int(parts["t"])) > 300:  # what a receiver should refuse
            return False
        expected = hmac.new(
            self.secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def eager_tasks():
    """Celery runs the tasks in this process (with REDIS_URL they would wait for a worker):
    the mail and webhook tasks that notifications enqueue after commit."""
    from portal.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before
