"""Soak: mixed traffic through the production shape (gunicorn with 2 gevent workers, the batched
writer, PostgreSQL, a Redis of the test's own with AOF), streams included and some longer than
a shortened in-flight lease, while a worker is SIGKILLed and Redis is killed and restarted.

Afterwards every request the router served has exactly one admitted record; every answer the
client got in full is billed what the router reported (or, for the few whose worker died with
the record still queued, the journal's documented estimate: the prompt, marked estimated); and
refused requests are recorded but never admitted.

SOAK_SECONDS sets the length: by default 20 s, in which every fault still happens under traffic
(the worker killed at 6 s, Redis down from 12 s) and streams outlive the lease; set it longer
(e.g. 600) for a real soak. The closing figures are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from tests.routersim import RouterSim
from tests.servehelpers import (
    MODEL,
    SERVED_KEY_PREFIX,
    Gunicorn,
    manage,
    private_redis,
    redis_server,
)
from tests.test_metering_served import provision_capped

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="the soak runs real processes on PostgreSQL and Redis",
    ),
]

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
CLIENTS = 6
LEASE_SECONDS = 2
CHUNK_DELAY_MS = 50  # a stream of 60 tokens lasts 3 s: longer than the lease
# The served processes' Redis key prefix (per run): their journal and spool live under it.
PREFIX = SERVED_KEY_PREFIX


class PrivateRedis:
    """A redis-server on its own port, with an fsync'ed AOF, so it can be killed and restarted
    without losing what it acknowledged (production runs Redis with AOF on)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="soak-redis-")
        self.process, self.port = private_redis(*self._options())

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _options(self) -> tuple[str, ...]:
        return ("--dir", self.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always")

    def start(self) -> None:
        self.process = redis_server(self.port, *self._options())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def journal_entries(self) -> int:
        """Admission journal entries left, over every organization's journal (and the one
        journal before they were split per organization)."""
        names = self.cli("--scan", "--pattern", f"{PREFIX}:*journal").split()
        return sum(int(self.cli("HLEN", name) or 0) for name in names if name.endswith("journal"))

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()


class Traffic:
    """Client threads sending a mix of calls until told to stop, keeping what each got."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: dict[str, dict] = {}  # request id -> usage the client got, in full
        self.refused: list[str] = []  # request ids of 4xx answers before admission
        self.unavailable = 0  # 503 while Redis was down
        self.broken = 0  # connection errors and streams cut off (the killed worker)
        self.kinds = {"json": 0, "stream": 0, "long_stream": 0, "invalid": 0}

    def run(self, seed: int) -> None:
        rnd = random.Random(seed)
        while not self.stop.is_set():
            roll = rnd.random()
            kind = (
                "json"
                if roll < 0.5
                else "stream"
                if roll < 0.75
                else "long_stream"
                if roll < 0.85
                else "invalid"
            )
            with self.lock:
                self.kinds[kind] += 1
            try:
                getattr(self, f"_{kind}")()
            except requests.RequestException:
                with self.lock:
                    self.broken += 1

    def _post(self, body: dict, *, stream: bool = False) -> requests.Response:
        return requests.post(
            f"{self.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "tell me more"}], **body},
            headers={"Authorization": f"Bearer {self.key}"},
            stream=stream,
            timeout=30,
        )

    def _answered(self, response: requests.Response, usage: dict | None) -> None:
        with self.lock:
            if response.status_code == 200 and usage is not None:
                self.done[response.headers["x-request-id"]] = usage
            elif response.status_code == 503:
                self.unavailable += 1
            elif response.status_code in (400, 404):
                self.refused.append(response.headers["x-request-id"])
            else:
                self.broken += 1

    def _json(self) -> None:
        response = self._post({"model": MODEL, "max_tokens": 5})
        usage = response.json().get("usage") if response.status_code == 200 else None
        self._answered(response, usage)

    def _stream(self, max_tokens: int = 5) -> None:
        body = {
            "model": MODEL,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with self._post(body, stream=True) as response:
            usage, last = None, None
            if response.status_code == 200:
                for line in response.iter_lines():
                    if not line.startswith(b"data: "):
                        continue
                    last = line[6:]
                    if last != b"[DONE]":
                        usage = json.loads(last).get("usage") or usage
                if last != b"[DONE]":
                    raise requests.ConnectionError("stream cut off")
            self._answered(response, usage)

    def _long_stream(self) -> None:
        self._stream(max_tokens=60)

    def _invalid(self) -> None:
        self._answered(self._post({"model": "no/such-model"}), None)


def _records(db_url: str, email: str) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT r.* FROM metering_usagerecord r JOIN accounts_user u ON u.id = r.user_id "
            "WHERE u.email = %s",
            [email],
        ).fetchall()


def _router_calls(sim: RouterSim) -> list[str]:
    """The request ids of the completions the router served (the portal sends each request's
    id as the router call's client_reference; the simulator logs it with --access-log)."""
    return re.findall(r"^completion received: (\S+)", sim.output(), flags=re.MULTILINE)


def test_soak_every_admitted_request_is_billed_exactly_once():
    email = f"soak-{int(time.time())}@example.com"
    redis = PrivateRedis()
    sim = RouterSim("--chunk-delay-ms", str(CHUNK_DELAY_MS), "--access-log")
    db, key = provision_capped(sim, email=email, cap=1000)
    server = Gunicorn(
        database_url=db,
        workers=2,
        REDIS_URL=redis.url,
        USAGE_WRITE_BATCHED="1",
        LIMITS_INFLIGHT_LEASE_SECONDS=str(LEASE_SECONDS),
        USAGE_REFUSED_PER_MINUTE="100000",
    )
    traffic = Traffic(server.url, key)
    threads = [threading.Thread(target=traffic.run, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        time.sleep(SECONDS * 0.3)
        victim = server.worker_pids()[0]
        faults = {"worker killed": time.time()}
        os.kill(victim, signal.SIGKILL)  # gunicorn starts another
        time.sleep(SECONDS * 0.3)
        faults["redis killed"] = time.time()
        unavailable = traffic.unavailable
        redis.kill()
        # Down until a client saw it (a 503: fail closed), however slow a loaded machine is.
        deadline = time.monotonic() + 60
        while traffic.unavailable == unavailable:
            assert time.monotonic() < deadline, "no client saw Redis down"
            time.sleep(0.05)
        redis.start()
        time.sleep(max(0.0, SECONDS - (time.monotonic() - started)))
        traffic.stop.set()
        for thread in threads:
            thread.join()
    finally:
        traffic.stop.set()
        server.stop()  # graceful: each worker flushes its writer on the way out
    try:
        # What beat does: write the records of requests whose worker died, once due.
        env = {"REDIS_URL": redis.url, "CACHE_KEY_PREFIX": PREFIX}
        deadline = time.monotonic() + 60
        while redis.journal_entries():
            assert time.monotonic() < deadline, "the admission journal never emptied"
            manage("metering_reconcile", database_url=db, env=env)
            time.sleep(0.5)
        manage("metering_reconcile", database_url=db, env=env)  # and the spool
        routed = _router_calls(sim)
    finally:
        sim.stop()
        redis.kill()

    records = _records(db, email)
    admitted = [r for r in records if r["admitted"]]
    by_id = {r["request_id"]: r for r in records}
    stand_ins = [r for r in admitted if r["error_code"] == "request_lost"]

    # Every request the router served has exactly one admitted record, and no other is.
    served, admitted_ids = set(routed), {r["request_id"] for r in admitted}
    assert len(served) == len(routed), "the router was sent a request twice"
    assert served - admitted_ids == set(), "served by the router, without an admitted record"
    unserved = [
        (rid, by_id[rid]["error_code"], by_id[rid]["created_at"].timestamp())
        for rid in sorted(admitted_ids - served)
    ]
    # The one exception: a request the killed worker had admitted (journaled) but not yet sent
    # to the router when it died. Its client got no answer, and the journal cannot tell it from
    # one the router served, so the reconciler bills it as `request_lost`, an estimate without
    # completion tokens. Such a stand-in can only have been admitted just before the kill.
    killed = faults["worker killed"]
    unserved = [
        entry
        for entry in unserved
        if not (entry[1] == "request_lost" and killed - LEASE_SECONDS <= entry[2] <= killed + 1)
    ]
    assert unserved == [], f"admitted records of requests the router never saw (faults {faults})"
    # Every answer the client had in full is billed what it was told, or (its worker died
    # with the record queued) the journal's estimate.
    real_done = 0
    for rid, usage in traffic.done.items():
        record = by_id[rid]
        assert record["admitted"]
        if record["error_code"] == "request_lost":
            assert record["estimated"] and record["completion_tokens"] == 0
            continue
        real_done += 1
        assert (record["outcome"], record["prompt_tokens"], record["completion_tokens"]) == (
            "ok",
            usage["prompt_tokens"],
            usage["completion_tokens"],
        ), rid
    billed = sum(
        by_id[rid]["total_tokens"]
        for rid in traffic.done
        if by_id[rid]["error_code"] != "request_lost"
    )
    reported = sum(
        u["total_tokens"]
        for rid, u in traffic.done.items()
        if by_id[rid]["error_code"] != "request_lost"
    )
    assert billed == reported
    # Refused requests have a record, never an admitted one.
    for rid in traffic.refused:
        assert by_id[rid]["admitted"] is False

    print(
        f"\nsoak {SECONDS:.0f}s: sent {sum(traffic.kinds.values())} {traffic.kinds}; "
        f"answered in full {len(traffic.done)}, refused {len(traffic.refused)}, "
        f"503 while Redis was down {traffic.unavailable}, broken {traffic.broken}; "
        f"router served {len(routed)}; records {len(records)} (admitted {len(admitted)}, "
        f"journal stand-ins {len(stand_ins)}); full answers billed as reported {real_done}, "
        f"tokens billed {billed} = reported {reported}"
    )
