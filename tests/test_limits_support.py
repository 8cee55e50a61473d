"""Shared pieces of the limits tests (no tests here): personas as principals, plans, both
backends, a future clock, and a worker that runs admissions in a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apikeys.services import KeyPrincipal
from catalog.routing import PlanInfo

ROOT = Path(__file__).resolve().parent.parent


def make_plan(**limits) -> PlanInfo:
    name = limits.pop("name", "free")
    fields = dict(
        requests_per_minute=None,
        tokens_per_minute=None,
        requests_per_day=None,
        tokens_per_day=None,
        requests_per_month=None,
        tokens_per_month=None,
        max_concurrent_requests=None,
    )
    fields.update(limits)
    return PlanInfo(id=1, name=name, all_models=True, **fields)


def principal(
    owner_id: int = 101,
    key_id: int = 201,
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    org_id: int | None = None,
    **budgets: int | None,
) -> KeyPrincipal:
    """A key's principal; its organization is the owner's personal one (the same number)
    unless `org_id` says otherwise. `budgets`: the key's requests_per_day, tokens_per_day,
    requests_per_month, tokens_per_month."""
    return KeyPrincipal(
        key_id=key_id,
        public_id=f"k{key_id}",
        org_id=owner_id if org_id is None else org_id,
        owner_id=owner_id,
        owner_email=f"user{owner_id}@example.com",
        plan_id=1,
        allowed_models=None,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        expires_at=None,
        **budgets,
    )


def future_ms(hours: float = 10.0) -> int:
    """A fake 'now' on a future day: counters expire at real times, so fake days lie ahead."""
    midnight = datetime.now(tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((midnight + timedelta(days=3, hours=hours)).timestamp() * 1000)


BACKENDS = ["memory", "redis"]


def make_backend(kind: str, settings):
    """A fresh backend of that kind; Redis ones skip the test without REDIS_URL."""
    from metering.limits.memory_backend import MemoryBackend

    if kind == "memory":
        return MemoryBackend()
    if not settings.REDIS_URL:
        pytest.skip("the Redis backend needs REDIS_URL (CI sets it)")
    from core.redis import get_redis
    from metering.limits.redis_backend import RedisBackend

    return RedisBackend(get_redis())


def unreachable_redis_client():
    """A Redis client for a port where nothing listens, that gives up at once: redis-py's
    default retries would make every refused call take seconds."""
    import socket

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


# --- processes ----------------------------------------------------------------------------------


class WorkerPool:
    """n worker processes (the same settings and REDIS_URL as the tests), started once: a
    process costs a Django start, the admissions themselves are milliseconds."""

    def __init__(self, n: int):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.test_settings",
            "PYTHONPATH": str(ROOT),
        }
        code = (
            "import django; django.setup(); from tests.test_limits_support import worker; worker()"
        )
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(i)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(n)
        ]
        for p in self.procs:
            assert p.stdout.readline().strip() == "ready"

    def run(self, phase: dict, *, processes: int | None = None) -> list[dict | None]:
        """Hand the phase to every process at once; their results (None: the process died)."""
        procs = self.procs[:processes]
        for p in procs:
            p.stdin.write(json.dumps(phase) + "\n")
            p.stdin.flush()
        lines = [p.stdout.readline() for p in procs]
        return [json.loads(line) if line else None for line in lines]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def worker() -> None:
    """One process: for each phase read from stdin, admits as told and prints a JSON result."""
    from core.errors import QuotaExceeded, RateLimited
    from metering.limits import limits_admit

    number = sys.argv[1]
    print("ready", flush=True)
    for line in sys.stdin:
        phase = json.loads(line)
        plan = make_plan(**phase["plan"])
        who = principal(
            phase.get("owner_id", 101), phase.get("key_id", 201), **phase.get("key", {})
        )
        admitted, refused, intervals = 0, 0, []
        deadline = time.monotonic() + phase.get("seconds", 0)
        attempt = 0
        while attempt < phase.get("attempts", 0) or time.monotonic() < deadline:
            attempt += 1
            try:
                adm = limits_admit(
                    principal=who,
                    plan=plan,
                    reserve_tokens=phase.get("reserve", 0),
                    request_id=f"w{number}-{time.time_ns()}",
                    lease_seconds=phase.get("lease"),
                    _now_ms=phase.get("now_ms"),
                )
            except (RateLimited, QuotaExceeded):
                refused += 1
                continue
            admitted += 1
            started = time.time()
            time.sleep(phase.get("hold", 0))
            intervals.append((started, time.time()))
            if phase.get("die"):
                os._exit(0)  # a process dying mid-request: it never settles
            if phase.get("settle") is not None:
                adm.settle(total_tokens=phase["settle"])
        print(
            json.dumps({"admitted": admitted, "refused": refused, "intervals": intervals}),
            flush=True,
        )


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
        key=lambda ev: (ev[0], ev[1]),
    )
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
