"""Logs in production are JSON lines carrying the request id, and never carry an API key,
a router key, a prompt or a completion."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from core.logging import JsonFormatter, RequestIdFilter
from core.request_context import set_request_id
from tests.routersim import RouterSim
from tests.servehelpers import MODEL, Gunicorn, provision

PROMPT_CANARY = "PROMPT-CANARY-4f1e9c"
ROUTER_TOKEN = "router-secret-token-9d2b"
# A well-formed key nobody has: it is looked up, then refused.
FORGED_KEY = "ctsk_abcdefghijkl_" + "Q" * 43


def _record(message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("portal.test", logging.WARNING, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_json_formatter_carries_the_request_id_and_extras():
    set_request_id("req_0123456789abcdef01234567")
    try:
        record = _record("router failed", router_id=3, reason="HTTP 503")
        RequestIdFilter().filter(record)
    finally:
        set_request_id(None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req_0123456789abcdef01234567"
    assert entry["msg"] == "router failed"
    assert entry["level"] == "WARNING"
    assert entry["router_id"] == 3 and entry["reason"] == "HTTP 503"


def test_outside_a_request_the_request_id_is_a_dash():
    record = _record("beat tick")
    RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"


def test_an_exception_is_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


@pytest.fixture(scope="module")
def served_json():
    sim = RouterSim("--token", ROUTER_TOKEN, "--chunks", "4")
    database_url, key = provision(sim, email="logs@example.com")
    # LOG_FORMAT unset: JSON is the production default (DEBUG off).
    server = Gunicorn(database_url=database_url, workers=1, LOG_LEVEL="INFO")
    yield server, key, sim
    server.stop()
    sim.stop()


def _post(url: str, key: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["x-request-id"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["x-request-id"], error.read().decode()


@pytest.mark.slow
def test_requests_through_gunicorn_log_json_lines_without_secrets(served_json):
    server, key, _ = served_json
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT_CANARY}]}
    status, request_id, answer = _post(server.url, key, body)
    assert status == 200
    completion = json.loads(answer)["choices"][0]["message"]["content"].strip()
    assert completion
    streamed = _post(server.url, key, {**body, "stream": True})
    assert streamed[0] == 200
    refused = _post(server.url, FORGED_KEY, body)
    assert refused[0] == 401
    server.stop()  # flush and close: every line is in the file now

    lines = [line for line in server.output().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, gunicorn's own too
    assert {"ts", "level", "logger", "request_id", "msg"} <= set(entries[0])
    by_request = {e["request_id"]: e for e in entries if e["logger"] == "gunicorn.access"}
    for rid, code in ((request_id, 200), (streamed[1], 200), (refused[1], 401)):
        assert rid.startswith("req_")
        assert by_request[rid]["status"] == code
        assert by_request[rid]["path"] == "/v1/chat/completions"
    text = "\n".join(lines)
    # The secret is everything after the public id: its own alphabet contains "_".
    for secret in (key, key.split("_", 2)[2], FORGED_KEY, ROUTER_TOKEN, PROMPT_CANARY, completion):
        assert secret not in text


# What gunicorn's own access() would have handed the JSON formatter, beside what the portal's
# logger hands it, for the same answers: quotes in values, no request id, no byte count, an
# IPv6 client. Run in a subprocess: gunicorn.conf.py sets process-wide environment and logging.
_ACCESS_LINES = """
import io, json, logging, runpy
from datetime import timedelta
from types import SimpleNamespace
from gunicorn import glogging
from gunicorn.config import Config

conf = runpy.run_path("gunicorn.conf.py")
assert conf["logger_class"] is conf["JsonAccessLogger"]
stream = io.StringIO()
handler = logging.StreamHandler(stream)
handler.setFormatter(conf["JsonLogFormatter"]())
access = logging.getLogger("gunicorn.access")
access.addHandler(handler)
access.propagate = False
cfg = Config()
logger = conf["JsonAccessLogger"](cfg)

def refused(*args):
    raise AssertionError("the JSON line was built from gunicorn's atoms")

req = SimpleNamespace(headers=[("AUTHORIZATION", "Bearer secret"), ("HOST", "h")])
cases = [
    (
        SimpleNamespace(status="200 OK", sent=5120, headers=[
            ("Content-Type", "application/json"), ("X-Request-Id", 'req_"quoted"')]),
        {"REQUEST_METHOD": "POST", "PATH_INFO": '/v1/chat/"x"', "REMOTE_ADDR": "::1",
         "RAW_URI": "/v1/chat/x?a=1", "SERVER_PROTOCOL": "HTTP/1.1", "QUERY_STRING": "a=1"},
        timedelta(seconds=1, microseconds=234567),
    ),
    (
        SimpleNamespace(status=431, sent=None, headers=[]),
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/models", "RAW_URI": "/v1/models",
         "SERVER_PROTOCOL": "HTTP/1.0"},
        timedelta(microseconds=999),
    ),
]
out = []
for resp, environ, took in cases:
    atoms = glogging.SafeAtoms(glogging.Logger.atoms(logger, resp, req, environ, took))
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, "", 0, cfg.access_log_format, (atoms,), None
    )
    before = handler.format(record)
    logger.atoms = refused
    logger.access(resp, req, environ, took)
    del logger.atoms
    out.append([before, stream.getvalue().splitlines()[-1]])

# An access log file beside it (ACCESS_LOG=<file>): gunicorn's own text line there.
import tempfile
path = tempfile.mktemp()
cfg.set("accesslog", path)
logger.setup(cfg)
resp, environ, took = cases[0]
logger.access(resp, req, environ, took)
logging.getLogger("gunicorn.access").handlers[-1].flush()
out.append(open(path).read().strip())
print(json.dumps(out))
"""


def test_the_json_access_line_is_the_one_gunicorns_atoms_made():
    import subprocess
    import sys

    from tests.routersim import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-c", _ACCESS_LINES],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "ENV_FILE": "", "ACCESS_LOG": "-"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *pairs, text_line = json.loads(done.stdout)
    for before, after in pairs:
        before, after = json.loads(before), json.loads(after)
        assert before.pop("ts")[:10] == after.pop("ts")[:10]
        assert after == before
    first = json.loads(pairs[0][1])
    assert first["request_id"] == 'req_\\"quoted\\"' and first["path"] == '/v1/chat/\\"x\\"'
    assert first["status"] == 200 and first["bytes"] == 5120 and first["duration_ms"] == 1234.57
    assert json.loads(pairs[1][1])["request_id"] == "-"
    assert text_line.startswith("::1 - - ["), text_line
    assert '"POST /v1/chat/x?a=1 HTTP/1.1" 200 5120 "-" "-"' in text_line


# --- Celery worker and beat: the same JSON lines as the web -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("service", ["worker", "beat"])
def test_celery_worker_and_beat_log_json_lines_like_the_web(tmp_path, service):
    """What `make worker` / `make beat` and compose run; each line a JSON object with the
    web's fields (setup_logging hands Celery's logging to settings.LOGGING)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.servehelpers import _production_env, served_database

    env = {**_production_env(), "DATABASE_URL": served_database(), "LOG_LEVEL": "INFO"}
    celery = str(Path(sys.executable).parent / "celery")
    extra = ["--concurrency", "1"] if service == "worker" else ["--schedule", str(tmp_path / "s")]
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [celery, "-A", "portal", "--quiet", service, "--loglevel", "INFO", *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ready = "ready." if service == "worker" else "beat: Starting"
    try:
        deadline = time.monotonic() + 30
        while ready not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    lines = log.read_text().splitlines()
    if service == "worker" and os.geteuid() == 0:
        # Celery warns a root worker before it sets logging up (the image runs as a user):
        # that one warning, raw text on stderr, is the only line allowed not to be JSON.
        assert "SecurityWarning" in lines[0], lines[0]
        end = next(i for i, line in enumerate(lines) if "_warn_or_raise_security_error" in line)
        lines = lines[end + 1 :]
    up_to_ready = lines[: next(i for i, line in enumerate(lines) if ready in line) + 1]
    entries = [json.loads(line) for line in up_to_ready if line.strip()]
    assert entries, log.read_text()
    for entry in entries:
        assert {"ts", "level", "logger", "request_id", "msg"} <= set(entry)
    assert any(entry["logger"].startswith("celery") for entry in entries)
