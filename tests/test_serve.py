"""`make serve`: gunicorn with gevent workers from gunicorn.conf.py. gevent patches each worker
before the app loads, so one worker holds many slow streams at once (requests to the router,
redis-py and psycopg all yield while they wait), and SIGTERM lets open streams finish."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from bench.sse import many_streams
from tests.routersim import REPO_ROOT, RouterSim
from tests.servehelpers import MODEL, Gunicorn, provision

ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def _conf(**env: str) -> dict:
    code = (
        "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); print(json.dumps({k: c[k] "
        "for k in ('bind', 'workers', 'worker_class', 'worker_connections', 'timeout', "
        "'graceful_timeout', 'preload_app', 'accesslog')}))"
    )
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in {"WEB_CONCURRENCY", "PORT", "HOST", "GRACEFUL_TIMEOUT"}
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_config_defaults_are_two_gevent_workers_on_port_8000():
    conf = _conf()
    assert conf["worker_class"] == "gunicorn_worker.ApiErrorGeventWorker"
    assert conf["workers"] == 2
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["preload_app"] is False  # gevent must patch before the app is imported
    assert conf["graceful_timeout"] > 0 and conf["worker_connections"] >= 1000


def test_a_worker_reads_each_setting_as_gunicorn_configured_it():
    """The worker keeps what a setting said the first time it was read (SettledConfig)."""
    from gunicorn.config import Config

    from gunicorn_worker import SettledConfig

    cfg = Config()
    cfg.set("keepalive", 5)
    cfg.set("limit_request_field_size", 20 * 1024)
    settled = SettledConfig(cfg)
    for name in cfg.settings:
        assert getattr(settled, name) == getattr(cfg, name), name
        assert getattr(settled, name) == getattr(cfg, name), name  # the kept answer too
    assert settled.keepalive == 5 and settled.limit_request_field_size == 20 * 1024
    assert settled.is_ssl == cfg.is_ssl
    assert settled.proxy_allow_networks() == cfg.proxy_allow_networks()
    with pytest.raises(AttributeError):
        settled.not_a_setting  # noqa: B018
    assert getattr(settled, "http_parser_of_a_later_gunicorn", "auto") == "auto"


def test_the_date_header_is_the_one_gunicorn_would_write():
    import email.utils
    import time

    from gunicorn_worker import http_date

    while True:  # a pair read within one second, whenever the test runs
        before = int(time.time())
        first, second = http_date(), http_date()
        if int(time.time()) == before:
            break
    assert first == second == email.utils.formatdate(before, localtime=False, usegmt=True)
    assert http_date(784111777.5) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_config_reads_the_environment():
    conf = _conf(
        WEB_CONCURRENCY="5",
        PORT="9123",
        HOST="127.0.0.1",
        GRACEFUL_TIMEOUT="7",
        WORKER_CONNECTIONS="300",
    )
    assert conf["workers"] == 5
    assert conf["bind"] == "127.0.0.1:9123"
    assert conf["graceful_timeout"] == 7
    assert conf["worker_connections"] == 300


def _usage_count(database_url: str, email: str) -> int:
    query = (
        "SELECT count(*) FROM metering_usagerecord r JOIN accounts_user u "
        "ON u.id = r.user_id WHERE u.email = %s"
    )
    if database_url.startswith("sqlite"):
        with sqlite3.connect(urlparse(database_url).path) as conn:
            return conn.execute(query.replace("%s", "?"), [email]).fetchone()[0]
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute(query, [email]).fetchone()[0]


@pytest.fixture(scope="module")
def slow_one_worker():
    # Each stream takes ~1 s upstream: 5 chunks 200 ms apart.
    sim = RouterSim("--chunks", "5", "--chunk-delay-ms", "200")
    database_url, key = provision(sim, email="serve@example.com")
    server = Gunicorn(database_url=database_url, workers=1)
    yield server, key, database_url, sim
    server.stop()
    sim.stop()


def _wait_for_in_flight(sim: RouterSim, count: int, streams) -> None:
    """Until the simulator holds `count` requests at once (or the streams ended without)."""
    deadline = time.monotonic() + 120
    with requests.Session() as session:
        while True:
            status = session.get(f"{sim.url}/api/v1/status", headers=sim.headers, timeout=10)
            held = status.json()["in_flight"]
            if held >= count:
                return
            assert not streams.done(), f"the streams ended with at most {held} held at once"
            assert time.monotonic() < deadline, f"{held} of {count} streams open at the router"
            time.sleep(0.05)


@pytest.mark.slow
def test_one_worker_holds_200_slow_streams_at_once(slow_one_worker):
    server, key, database_url, sim = slow_one_worker
    assert len(server.worker_pids()) == 1
    before = _usage_count(database_url, "serve@example.com")
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    # The router holds every stream after its first chunk until all 200 are open there at
    # once: one worker relaying them one at a time (or a few) never gets them all there.
    requests.get(f"{sim.url}/_sim/hold", headers=sim.headers, timeout=10).raise_for_status()
    with ThreadPoolExecutor(1) as pool:
        streams = pool.submit(
            asyncio.run,
            many_streams(
                "127.0.0.1",
                server.port,
                "/v1/chat/completions",
                {"Authorization": f"Bearer {key}"},
                body,
                count=200,
                ramp_seconds=0.5,
            ),
        )
        try:
            _wait_for_in_flight(sim, 200, streams)
        finally:
            requests.get(f"{sim.url}/_sim/release", headers=sim.headers, timeout=10)
        results = streams.result()
    errors = [r.error for r in results if not r.ok]
    assert errors == []
    assert all(r.tokens == 5 for r in results)
    # Every stream's usage record was written through the pooled database connections.
    deadline = time.monotonic() + 10
    while _usage_count(database_url, "serve@example.com") < before + 200:
        assert time.monotonic() < deadline, "usage records missing"
        time.sleep(0.1)
    assert _usage_count(database_url, "serve@example.com") == before + 200


@pytest.mark.slow
@pytest.mark.skipif(not ON_POSTGRES, reason="psycopg only runs on PostgreSQL")
def test_psycopg_yields_to_other_greenlets_under_gevent(slow_one_worker):
    _, _, database_url, _ = slow_one_worker
    # What a gevent worker does: patch first, then load Django and query from many greenlets.
    # Six greenlets each run a 2 s query; the server is watched from here: if psycopg blocked
    # the hub, it would never run more than one of them at once.
    # The query carries this test's own mark: another run on the same server runs it too.
    mark = f"six at once {uuid.uuid4().hex}"
    code = """
from gevent import monkey; monkey.patch_all()
import threading, django
django.setup()
from django.db import connection
def sleepy():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(2) /* MARK */")
    connection.close()
threads = [threading.Thread(target=sleepy) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
""".replace("MARK", mark)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "SECRET_KEY": "x",
        "LOG_LEVEL": "WARNING",
    }
    import psycopg

    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env)
    highest = 0
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while child.poll() is None:
            (running,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'",
                [f"SELECT pg_sleep(2) /* {mark} */"],
            ).fetchone()
            highest = max(highest, running)
    assert child.wait(timeout=60) == 0
    assert highest == 6, f"psycopg blocked the hub: at most {highest} queries ran at once"


@pytest.mark.slow
def test_sigterm_lets_an_open_stream_finish():
    sim = RouterSim("--chunks", "8", "--chunk-delay-ms", "250")
    try:
        database_url, key = provision(sim, email="graceful@example.com")
        server = Gunicorn(database_url=database_url, workers=1, GRACEFUL_TIMEOUT="20")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps(
                    {
                        "model": MODEL,
                        "stream": True,
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                ),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status == 200
            first = response.read1(65536)
            assert b"data:" in first
            server.terminate()  # mid-stream: ~2 s of it are still to come
            rest = response.read()
            assert b"data: [DONE]" in first + rest
            assert (first + rest).count(b'"content"') >= 8
            assert server.process.wait(timeout=20) == 0
        finally:
            server.stop()
    finally:
        sim.stop()
