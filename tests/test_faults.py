"""Faults survived, with real processes: the portal under gunicorn (gevent), routers that die,
workers killed, Redis and PostgreSQL restarted, Celery away for a while. For each: what the
client gets, and that usage records equal the requests that passed authentication.

Needs PostgreSQL and Redis (CI has both); skipped on the embedded default.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.routersim import REPO_ROOT, RouterSim
from tests.servehelpers import (
    MODEL,
    Gunicorn,
    _base_env,
    config_file,
    free_port,
    manage,
    manage_many,
    private_redis,
    redis_server,
    served_database,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="fault tests run real processes on PostgreSQL and Redis (CI sets both)",
    ),
]


# The client asks the server to close each connection after its answer. A kept `requests`
# response holds its keep-alive connection open until it is garbage collected (closing its
# session does not close it), and a gevent worker stopping gracefully waits for every open
# connection: seconds of keep-alive timeout at each `server.stop()`.
CLOSE = {"Connection": "close"}


def provision(sim: RouterSim, *, email: str) -> tuple[str, str]:
    """The served catalog's model on a pool of its own holding only `sim` (routers of earlier
    tests stay in their pools), and a user with a key: (database url, raw key)."""
    db = served_database()
    pool = email.split("@")[0]
    config = {
        "plans": [{"name": "served", "models": ["*"], "default": True}],
        "pools": [
            {"name": pool, "routers": [{"url": sim.url, "session_id": 1, "token": sim.token}]}
        ],
        "models": [{"id": MODEL, "pool": pool, "max_tokens": 1024}],
    }
    with config_file(config) as path:  # one process for both commands: a Django start each
        _, key = manage_many(
            ["apply_config", path],
            ["apikey_create", "--email", email, "--name", "k", "--create-user"],
            database_url=db,
        )
    return db, key.strip()


def _records(
    db_url: str, where: str = "TRUE", params=(), *, expect: int | None = None, timeout: float = 30.0
) -> list[dict]:
    """Records matching `where`; with `expect`, wait (up to `timeout`, a deadline, not a
    duration) until that many are in the table: served processes write usage in batches, a
    few tens of ms after answering."""
    import psycopg
    from psycopg.rows import dict_row

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                f"SELECT * FROM metering_usagerecord WHERE {where}", params
            ).fetchall()
        if expect is None or len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _stream(url: str, key: str, **body):
    payload = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a story"}],
        **body,
    }
    return requests.post(
        f"{url}/v1/chat/completions",
        json=payload,
        stream=True,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", **CLOSE},
    )


def _events(lines):
    for line in lines:
        if line.startswith(b"data: "):
            data = line[6:]
            yield "[DONE]" if data == b"[DONE]" else json.loads(data)


def _chat(url: str, key: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}", **CLOSE},
        json={"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_router_killed_mid_stream_ends_in_error_chunk_and_bills_what_was_delivered():
    sim = RouterSim("--chunks", "200", "--chunk-delay-ms", "30")
    db, key = provision(sim, email="fault-router@example.com")
    server = Gunicorn(database_url=db)
    try:
        response = _stream(server.url, key)
        events = _events(response.iter_lines())
        received = [next(events) for _ in range(4)]  # role + 3 content chunks
        sim.stop()  # the router process dies mid-stream
        rest = list(events)
    finally:
        server.stop()
        sim.stop()
    assert received[1]["choices"][0]["delta"]["content"] == " word0"
    assert rest[-1] == "[DONE]"
    assert rest[-2]["choices"] == []  # no finish_reason: the answer did not finish
    assert rest[-2]["error"]["code"] == "upstream_error"
    (record,) = _records(db, "request_id = %s", [response.headers["x-request-id"]], expect=1)
    assert record["outcome"] == "upstream_error" and record["streamed"]
    assert record["completion_tokens"] > 0 and record["estimated"]


def test_all_routers_down_is_503_and_recorded():
    sim = RouterSim()
    db, key = provision(sim, email="fault-down@example.com")
    server = Gunicorn(database_url=db)
    try:
        assert _chat(server.url, key).status_code == 200
        sim.stop()
        down = _chat(server.url, key)
    finally:
        server.stop()
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "upstream_unavailable"
    (record,) = _records(db, "request_id = %s", [down.headers["x-request-id"]], expect=1)
    assert (record["outcome"], record["total_tokens"]) == ("upstream_error", 0)


def test_worker_killed_mid_stream_is_recorded_from_the_admission_journal():
    sim = RouterSim("--chunks", "300", "--chunk-delay-ms", "30")
    db, key = provision(sim, email="fault-sigkill@example.com")
    server = Gunicorn(database_url=db, LIMITS_INFLIGHT_LEASE_SECONDS="2")
    try:
        response = _stream(server.url, key)
        request_id = response.headers["x-request-id"]
        events = _events(response.iter_lines())
        for _ in range(3):
            next(events)
        (worker,) = server.worker_pids()
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(events)
        assert _records(db, "request_id = %s", [request_id]) == []  # the worker wrote nothing
        # Once the admission's lease runs out, reconciling writes the record from the journal.
        deadline = time.monotonic() + 60
        while True:
            manage("metering_reconcile", database_url=db)
            if _records(db, "request_id = %s", [request_id]):
                break
            assert time.monotonic() < deadline, "the journal never gave the record back"
        manage("metering_reconcile", database_url=db)  # again: still one record
        (record,) = _records(db, "request_id = %s", [request_id])
        assert (record["outcome"], record["error_code"]) == ("cancelled", "request_lost")
        assert record["prompt_tokens"] > 0 and record["estimated"]
        # gunicorn replaced the worker: service goes on.
        deadline = time.monotonic() + 20
        while True:
            try:
                if _chat(server.url, key).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        server.stop()
        sim.stop()


def test_sigterm_lets_open_streams_finish_and_records_them():
    sim = RouterSim("--chunks", "40", "--chunk-delay-ms", "50")
    db, key = provision(sim, email="fault-sigterm@example.com")
    server = Gunicorn(database_url=db, GRACEFUL_TIMEOUT="30")
    try:
        response = _stream(server.url, key)
        events = _events(response.iter_lines())
        first = [next(events) for _ in range(3)]
        server.terminate()
        # A gevent worker notices the signal within its heartbeat, then accepts no more.
        deadline = time.monotonic() + 30
        while True:
            try:
                _chat(server.url, key)
            except requests.ConnectionError:
                break
            assert time.monotonic() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
        rest = list(events)
        server.process.wait(timeout=30)
    finally:
        server.stop()
        sim.stop()
    text = "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in first + rest[:-1]
        if isinstance(e, dict) and e["choices"]
    )
    assert text == "".join(f" word{i}" for i in range(40))
    assert rest[-1] == "[DONE]"
    (record,) = _records(db, "request_id = %s", [response.headers["x-request-id"]], expect=1)
    assert (record["outcome"], record["completion_tokens"]) == ("ok", 40)


class _Load:
    """Threads posting small chats until stopped; `wait_for` waits on what they saw."""

    def __init__(self, url: str, key: str, threads: int = 4) -> None:
        self.results: list[requests.Response | str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, key), daemon=True) for _ in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, key: str) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                self.results.append(
                    session.post(
                        f"{url}/v1/chat/completions",
                        timeout=15,
                        headers={"Authorization": f"Bearer {key}", **CLOSE},
                        json={
                            "model": MODEL,
                            "max_tokens": 2,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    )
                )
            except requests.RequestException as exc:
                self.results.append(exc.__class__.__name__)
            self._stop.wait(0.02)

    def statuses(self, since: int = 0) -> list[int]:
        return [r.status_code for r in self.results[since:] if not isinstance(r, str)]

    def wait_for(self, status: int, *, count: int = 1, since: int = 0, timeout: float = 60) -> int:
        """Wait until `count` answers with `status` came after result number `since`; return
        how many results there are then."""
        deadline = time.monotonic() + timeout
        while self.statuses(since).count(status) < count:
            assert time.monotonic() < deadline, (status, self.statuses(since))
            time.sleep(0.02)
        return len(self.results)

    def stop(self) -> list[requests.Response | str]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.results


# The private Redis keeps nothing: killing it loses all it held.
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def test_redis_restarted_under_load_fails_closed_and_loses_no_record():
    sim = RouterSim()
    db, key = provision(sim, email="fault-redis@example.com")
    redis_proc, port = private_redis(*NO_PERSISTENCE)
    redis_url = f"redis://127.0.0.1:{port}/0"
    server = Gunicorn(database_url=db, workers=2, REDIS_URL=redis_url)
    try:
        load = _Load(server.url, key)
        seen = load.wait_for(200, count=10)
        redis_proc.kill()  # SIGKILL: Redis and all its counters are gone
        redis_proc.wait()
        seen = load.wait_for(503, count=5, since=seen)
        redis_proc = redis_server(port, *NO_PERSISTENCE)
        load.wait_for(200, count=10, since=seen)  # service came back
        results = load.stop()
    finally:
        server.stop()
        sim.stop()
        redis_proc.kill()
    responses = [r for r in results if not isinstance(r, str)]
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses  # the outage was seen, and service came back
    for r in responses:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "service_unavailable"
    assert all(r.headers.get("x-request-id") for r in responses)
    assert not [r for r in results if isinstance(r, str)]
    ids = [r.headers["x-request-id"] for r in responses]
    records = _records(db, "request_id = ANY(%s)", [ids], expect=len(ids))
    assert len(records) == len(ids)  # one record per answered request, none lost, none doubled


@pytest.fixture
def private_postgres():
    """A PostgreSQL cluster of this test's own, so it can be stopped and started."""
    bindir = Path("/usr/lib/postgresql") / sorted(os.listdir("/usr/lib/postgresql"))[-1] / "bin"
    if not (bindir / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries and root to run them as postgres")
    data = Path(tempfile.mkdtemp(prefix="pg-fault-"))
    shutil.chown(data, "postgres", "postgres")

    def as_postgres(*cmd):
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120
        )

    as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    port = free_port()

    def start():
        opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        as_postgres(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-w",
            "start",
            "-l",
            str(data / "log"),
        )

    def stop():
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")

    for attempt in range(5):  # the free port may be taken before PostgreSQL binds it
        try:
            start()
            break
        except subprocess.CalledProcessError:
            if attempt == 4:
                raise
            port = free_port()
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-c",
            "CREATE DATABASE portal",
        ],
        check=True,
        capture_output=True,
    )
    url = f"postgres://postgres@127.0.0.1:{port}/portal"
    manage("migrate", "--noinput", database_url=url)
    yield {"url": url, "start": start, "stop": stop}
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-m",
            "immediate",
            "stop",
        ],
        capture_output=True,
        check=False,
    )
    shutil.rmtree(data, ignore_errors=True)


def test_postgres_restarted_under_load_serves_on_and_spools_usage(private_postgres):
    sim = RouterSim()
    db = private_postgres["url"]
    config = {
        "plans": [{"name": "p", "models": ["*"], "default": True}],
        "pools": [
            {"name": "default", "routers": [{"url": sim.url, "session_id": 1, "token": sim.token}]}
        ],
        "models": [{"id": MODEL, "pool": "default"}],
    }
    with config_file(config) as path:
        _, key = manage_many(
            ["apply_config", path],
            ["apikey_create", "--email", "fault-pg@example.com", "--name", "k", "--create-user"],
            database_url=db,
        )
    key = key.strip()
    server = Gunicorn(database_url=db, workers=2)
    try:
        # Both workers warm (their catalog is built from the database, once): whichever
        # worker wakes first accepts, so on a loaded machine a few calls may all reach one,
        # and the other, cold, would wait on the stopped database for every call it takes.
        deadline = time.monotonic() + 60
        while not set(server.worker_pids()) <= server.answered_by("/v1/chat/completions"):
            assert time.monotonic() < deadline, "a worker never answered"
            assert _chat(server.url, key).status_code == 200
        load = _Load(server.url, key)
        seen = load.wait_for(200, count=10)
        private_postgres["stop"]()
        # Answers go on while it is down: some of them were served with no database at all.
        seen = load.wait_for(200, count=20, since=seen)
        private_postgres["start"]()
        load.wait_for(200, count=10, since=seen)
        results = load.stop()
        # The writers write again once psycopg's pool reconnects, at its next try: it backs
        # off while the database is down (1, 2, 4, ... s), so a longer outage (a loaded
        # machine) means a later try. Writes run in order: once the last answer's record is
        # in, every earlier one is in or spooled, and the workers' exit flush is quick.
        last = [r for r in results if not isinstance(r, str)][-1]
        _records(db, "request_id = %s", [last.headers["x-request-id"]], expect=1, timeout=90)
    finally:
        server.stop()  # the workers flush their queued records as they exit
        sim.stop()
    manage("metering_reconcile", database_url=db)  # records spooled during the outage
    responses = [r for r in results if not isinstance(r, str)]
    # The hot path needs no database: customers saw no error at all while it was down.
    assert {r.status_code for r in responses} == {200}
    assert not [r for r in results if isinstance(r, str)]
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(_records(db, "request_id = ANY(%s)", [ids], expect=len(ids))) == len(ids)


def test_celery_away_for_a_while_then_catches_up_exactly():
    sim = RouterSim()
    db, key = provision(sim, email="fault-celery@example.com")
    server = Gunicorn(database_url=db)
    env = {**_base_env(), "DATABASE_URL": db}
    try:
        for _ in range(5):
            assert _chat(server.url, key).status_code == 200
        # Beat fires while no worker runs: the task waits in the broker.
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from metering.tasks import aggregate_usage; aggregate_usage.delay()",
            ],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        for _ in range(5):
            assert _chat(server.url, key).status_code == 200
        pending = _records(db, "id IN (SELECT record_id FROM metering_usagepending)", expect=10)
        assert len(pending) >= 10
        worker = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "portal",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "WARNING",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while (
                _records(db, "id IN (SELECT record_id FROM metering_usagepending)")
                and time.monotonic() < deadline
            ):
                time.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    finally:
        server.stop()
        sim.stop()
    import psycopg

    with psycopg.connect(db) as conn:
        ledger = conn.execute(
            "SELECT sum(requests), sum(total_tokens) FROM metering_dailyusage"
        ).fetchone()
        records = conn.execute(
            "SELECT count(*), sum(total_tokens) FROM metering_usagerecord"
        ).fetchone()
    assert tuple(map(int, ledger)) == tuple(map(int, records))
