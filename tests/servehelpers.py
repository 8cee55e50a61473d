"""The portal as production runs it, for tests: gunicorn (`gunicorn.conf.py`: gevent workers)
in a subprocess, DEBUG off, collectstatic done, on a database of its own that `manage.py`
commands set up like an operator would (migrate, apply_config, apikey_create).

A served process gets production's environment, not the test process's: only what
`SERVED_DIFFERENCES` names differs (ports, database names, key prefix, secrets, and plain HTTP
where production has a TLS proxy); `tests/test_served_config.py` holds that line. So with
REDIS_URL it runs the batched usage writer and the lean /v1/ stack, like production.

The served database is not pytest-django's test database (the server cannot see a test's
uncommitted rows): on PostgreSQL it is `test_<name>_<run id>_served`, made once per run and
dropped at its end; on the embedded default a SQLite file in a temporary folder. REDIS_URL,
when set, is shared with the test process, under this run's own key prefix.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

from tests import rediscluster
from tests.routersim import DIE_WITH_PARENT, REPO_ROOT, RouterSim

VENV_BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 60.0
MODEL = "cortensor/llama-3.1-8b"
# portal/test_settings.py sets it for the test process (an xdist worker's carries the worker's
# name); a helper used alone makes its own.
RUN_ID = os.environ.setdefault("PORTAL_TEST_RUN_ID", uuid.uuid4().hex[:8])
if os.environ.get("PYTEST_XDIST_WORKER") and not RUN_ID.endswith(
    "_" + os.environ["PYTEST_XDIST_WORKER"]
):  # imported before the settings: this worker would share the controller's names
    raise RuntimeError("tests.servehelpers imported before portal.test_settings in an xdist worker")
SERVED_KEY_PREFIX = f"portal-served-{RUN_ID}"
# What a process of the system needs, whatever it runs; nothing of the portal's settings.
SYSTEM_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")


def free_port() -> int:
    """A port free now. Someone may take it before it is bound: callers retry on a collision
    (or, better, hand over a bound socket: see `Gunicorn`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server(port: int, *options: str) -> subprocess.Popen:
    """A redis-server of the caller's own on `port` (with `options`), once it answers. Ready
    means the server answering there reports this process's id: a PONG may come from whoever
    held the port. OSError if the port was taken (the server exited)."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while _redis_process_id(port) != process.pid:
        if process.poll() is not None:
            raise OSError(f"redis-server could not take port {port}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return process


def _redis_process_id(port: int) -> int | None:
    info = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "server"], capture_output=True, text=True
    ).stdout
    found = re.search(r"^process_id:(\d+)", info, re.MULTILINE)
    return int(found.group(1)) if found else None


def private_redis(*options: str) -> tuple[subprocess.Popen, int]:
    """`redis_server` on a free port (another one if that was taken first): (process, port)."""
    for attempt in range(5):
        port = free_port()
        try:
            return redis_server(port, *options), port
        except OSError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


@functools.cache
def static_root() -> str:
    """collectstatic, once per run, into a folder of the run's own (DEBUG off serves the
    hashed files of the manifest, as production does after `make serve`'s collectstatic)."""
    root = tempfile.mkdtemp(prefix=f"portal-static-{RUN_ID}-")
    _cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    env = {**_production_env(), "STATIC_ROOT": root}
    _run_manage(["collectstatic", "--noinput", "-v", "0"], env)
    return root


@functools.cache
def spool_dir() -> str:
    """The usage spool folder of this run's served processes: a drain takes every file in its
    folder, so one shared with another run's processes would move their records into this
    run's database."""
    root = tempfile.mkdtemp(prefix=f"portal-spool-{RUN_ID}-")
    _cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    return root


def _production_env() -> dict[str, str]:
    """The environment an operator gives a production process, with this run's secrets and
    stores: nothing else from the test process (its settings module, USAGE_WRITE_BATCHED=0,
    PORTAL_TESTING, LOG_FORMAT, ...) reaches a served process."""
    env = {name: os.environ[name] for name in SYSTEM_VARIABLES if name in os.environ}
    env.update(SECRET_KEY="served-test-secret-key", APIKEY_HASH_SECRET="served-test-apikey-secret")
    env["ENV_FILE"] = ""  # a developer's .env in the checkout is not production's
    if os.environ.get("REDIS_URL"):
        env.update(REDIS_URL=os.environ["REDIS_URL"], CACHE_KEY_PREFIX=SERVED_KEY_PREFIX)
        for name in ("REDIS_CLUSTER", "CELERY_BROKER_URL"):  # a cluster run's Redis
            if os.environ.get(name):
                env[name] = os.environ[name]
    else:
        # The embedded default's documented switch: production without Redis is refused
        # (with DEBUG off) unless the operator accepts per-process state.
        env["ALLOW_LOCAL_STATE"] = "1"
    return env


# Where a served process may differ from production's defaults, and why. Anything else a
# served test changes, it names in its own call (`Gunicorn(..., GRACEFUL_TIMEOUT="30")`).
SERVED_DIFFERENCES = {
    "ENV_FILE": "no .env: a developer's (from `make run`) must not reach a served test",
    "SECRET_KEY": "a secret",
    "APIKEY_HASH_SECRET": "a secret",
    "DATABASE_URL": "the run's own database",
    "REDIS_URL": "the run's Redis",
    "REDIS_CLUSTER": "the run's Redis (`make test-cluster`: a cluster)",
    "CELERY_BROKER_URL": "the run's broker (`make test-cluster`: a single Redis beside it)",
    "CACHE_KEY_PREFIX": "the run's own key prefix",
    "STATIC_ROOT": "the run's own collectstatic folder",
    "USAGE_SPOOL_DIR": "the run's own spool folder (a drain takes every file in it)",
    "SECURE_SSL_REDIRECT": "tests speak plain HTTP on loopback; production has a TLS proxy",
    "SECURE_COOKIES": "tests speak plain HTTP on loopback; production has a TLS proxy",
    "ALLOW_LOCAL_STATE": "without REDIS_URL only: the embedded default's per-process state",
}


def _base_env() -> dict[str, str]:
    """What every served process and `manage.py` command of these tests runs with."""
    return {
        **_production_env(),
        "STATIC_ROOT": static_root(),
        "USAGE_SPOOL_DIR": spool_dir(),
        "SECURE_SSL_REDIRECT": "0",
        "SECURE_COOKIES": "0",
    }


_cleanup: list = []


def cleanup() -> None:
    """Drop what this run made (its served database, its static folder, its served processes'
    Redis keys): end of session."""
    while _cleanup:
        _cleanup.pop()()
    if os.environ.get("REDIS_URL"):
        client = rediscluster.client_for_env()
        try:
            delete_prefix(client, SERVED_KEY_PREFIX)
        finally:
            client.close()


def delete_prefix(client, prefix: str) -> int:
    """Delete the keys under `prefix` (and nothing else: not FLUSHDB, which would take
    every other run's and process's keys on the same Redis database with it)."""
    deleted = 0
    batch = []
    # `{prefix:usage}:...`: the spool's and the journal index's keys lead with their hash tag
    for pattern in (_glob_escape(prefix) + ":*", "\\{" + _glob_escape(prefix) + ":*"):
        for key in client.scan_iter(match=pattern, count=1000):  # a cluster's: every primary
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.unlink(*batch)
                batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


@functools.cache
def served_database() -> str:
    """A migrated database URL for served processes (made once per test session)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        parsed = urlparse(url)
        name = f"test_{parsed.path.lstrip('/')}_{RUN_ID}_served"
        admin = parsed._replace(path="/postgres").geturl()
        _postgres_admin(admin, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        _postgres_admin(admin, "CREATE DATABASE {}", name)
        _cleanup.append(
            lambda: _postgres_admin(admin, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        )
        served = parsed._replace(path=f"/{name}").geturl()
    else:
        folder = tempfile.mkdtemp(prefix=f"portal-served-{RUN_ID}-")
        _cleanup.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        served = f"sqlite:///{folder}/db.sqlite3"
    manage("migrate", "--noinput", database_url=served)
    return served


def _postgres_admin(admin_url: str, statement: str, name: str) -> None:
    """One statement on a database of this run's own name (never anyone else's)."""
    import psycopg
    from psycopg import sql

    assert RUN_ID in name, name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


def _run_manage(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def manage(*args: str, database_url: str, env: dict[str, str] | None = None) -> str:
    """`manage.py` as an operator runs it against the served database."""
    full_env = {**_base_env(), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **(env or {})}
    return _run_manage(list(args), full_env)


class Output(int):
    """In a `manage_many` command: the stripped stdout of an earlier command of the batch (by
    its index), e.g. the slug `org_create` printed."""


# Runs the commands of a batch one after the other in one process, each through
# `call_command` with its command-line arguments (parsed by the command's own parser, as
# `manage.py` does), and answers their stdouts as a JSON list on its last line.
_MANAGE_MANY = """
import contextlib, io, json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
import django
django.setup()
from django.core.management import call_command
outputs = []
for argv in json.loads(sys.stdin.read()):
    argv = [outputs[a["output"]].strip() if isinstance(a, dict) else a for a in argv]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        call_command(*argv, stdout=buffer)
    outputs.append(buffer.getvalue())
print(json.dumps(outputs))
"""


def manage_many(
    *commands: list[str | Output], database_url: str, env: dict[str, str] | None = None
) -> list[str]:
    """Several `manage.py` commands against the served database in one process (a Django
    start costs seconds on a busy machine; a served fixture runs up to a dozen commands):
    each command's stdout, in order. A command that fails stops the batch with its error."""
    full_env = {**_base_env(), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **(env or {})}
    batch = [[{"output": int(a)} if isinstance(a, Output) else a for a in c] for c in commands]
    result = subprocess.run(
        [sys.executable, "-c", _MANAGE_MANY],
        cwd=REPO_ROOT,
        env=full_env,
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        names = ", ".join(str(c[0]) for c in commands)
        raise RuntimeError(f"manage.py {names} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


@contextlib.contextmanager
def config_file(config: dict):
    """`config` in a JSON file, for `apply_config` (as an operator would write one)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    try:
        yield handle.name
    finally:
        os.unlink(handle.name)


def apply_config(config: dict, *, database_url: str) -> None:
    """`manage.py apply_config` with `config` written to a file, as an operator would."""
    with config_file(config) as path:
        manage("apply_config", path, database_url=database_url)


def provision(
    sim: RouterSim, *, email: str, models: tuple[tuple[str, str], ...] = ((MODEL, "llama3"),)
) -> tuple[str, str]:
    """Point the served catalog's `models` ((id, chat template) pairs) at `sim`, make a user
    with a key: (database url, raw key)."""
    database_url = served_database()
    config = {
        "plans": [
            {
                "name": "served",
                "requests_per_minute": 100000,
                "tokens_per_minute": 100000000,
                "max_concurrent_requests": 5000,
                "models": ["*"],
                "default": True,
            }
        ],
        # A pool per simulator: earlier provisions' routers must not serve this one's model.
        "pools": [
            {
                "name": f"sim-{sim.port}",
                "routers": [
                    {
                        "url": sim.url,
                        "api_version": "v1",
                        "session_id": 1,
                        "token": sim.token,
                        "weight": 1,
                    }
                ],
            }
        ],
        "models": [
            {
                "id": model,
                "pool": f"sim-{sim.port}",
                "chat_template": template,
                "max_tokens": 1024,
                "context_length": 8192,
            }
            for model, template in models
        ],
    }
    with config_file(config) as path:
        _, key = manage_many(
            ["apply_config", path],
            ["apikey_create", "--email", email, "--name", "served", "--create-user"],
            database_url=database_url,
        )
    return database_url, key.strip()


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py portal.wsgi:application` with production's environment
    and the given deviations (each a test's deliberate choice, e.g. GRACEFUL_TIMEOUT="30").

    The listening socket is bound here, on port 0, and handed to gunicorn (`--bind fd://N`):
    no port is probed and then lost to another process before gunicorn binds it."""

    def __init__(self, *, database_url: str, workers: int = 1, **env: str) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        self.port = listener.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log")  # noqa: SIM115
        self.env = {
            **_base_env(),
            "DATABASE_URL": database_url,
            "WEB_CONCURRENCY": str(workers),
            **env,
        }
        try:
            self.process = subprocess.Popen(
                [
                    *DIE_WITH_PARENT,
                    str(VENV_BIN / "gunicorn"),
                    "-c",
                    "gunicorn.conf.py",
                    "--bind",
                    f"fd://{listener.fileno()}",
                    "portal.wsgi:application",
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
            )
        finally:
            listener.close()  # gunicorn holds its own copy
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.output()}")
            try:
                with opener.open(f"{self.url}/healthz", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer in time:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        result = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in result.stdout.split()]

    def answered_by(self, path: str) -> set[int]:
        """The workers that have answered a request for `path` so far: the pids of its access
        log lines (production's JSON log, one line per request, written as each one ends)."""
        pids = set()
        for line in self.output().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("msg") == "request" and entry["path"] == path:
                pids.add(entry["pid"])
        return pids

    def terminate(self) -> None:
        """SIGTERM to the master: the graceful shutdown an orchestrator does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def enabled_models(database_url: str) -> list[str]:
    """The served catalog's enabled models, in `/v1/models`' order. A worker's served database
    is shared by the modules it runs, in an order that varies from run to run, and some of them
    add models of their own: a test of the list compares it with this, not with its own."""
    rows = db_query(
        database_url,
        "SELECT public_id FROM catalog_catalogmodel WHERE enabled ORDER BY sort_order, public_id",
    )
    return [row["public_id"] for row in rows]


def db_query(database_url: str, query: str, params: tuple | list = ()) -> list[dict]:
    """Rows of a served database as dicts (PostgreSQL, or the embedded default's SQLite);
    `query` uses %s placeholders."""
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(urlparse(database_url).path) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(query.replace("%s", "?"), list(params)).fetchall()
        return [dict(row) for row in rows]
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


class DbReader:
    """One connection to a served database, kept open for many reads (a test polling for the
    records a served process writes): `db_query` connects per call, which costs more than a
    poll. Autocommit, so each read sees what served processes committed by then."""

    def __init__(self, database_url: str) -> None:
        self.sqlite = database_url.startswith("sqlite")
        if self.sqlite:
            import sqlite3

            self.conn = sqlite3.connect(urlparse(database_url).path, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
        else:
            import psycopg
            from psycopg.rows import dict_row

            self.conn = psycopg.connect(database_url, autocommit=True, row_factory=dict_row)

    def query(self, query: str, params: tuple | list = ()) -> list[dict]:
        """Rows as dicts; `query` uses %s placeholders (as `db_query`)."""
        if self.sqlite:
            query = query.replace("%s", "?")
        return [dict(row) for row in self.conn.execute(query, list(params)).fetchall()]

    def close(self) -> None:
        self.conn.close()


NGINX_CONFIG = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream portal {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            # A request that reached a host is never sent to the other one: it may have run.
            proxy_next_upstream off;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """Debian's nginx in front of `upstreams` (round-robin), as a load balancer in front of
    several hosts: a generated config in a temporary folder, in the foreground, dying with
    the test process. Each answer names the host that served it (`X-Upstream`)."""

    def __init__(self, upstreams: list[str]) -> None:
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
        self.tmp = tempfile.mkdtemp(prefix=f"nginx-{RUN_ID}-")
        servers = "\n".join(f"        server {urlparse(u).netloc};" for u in upstreams)
        for _attempt in range(5):  # the port may be taken between probing and binding
            self.port = free_port()
            config = Path(self.tmp) / "nginx.conf"
            config.write_text(NGINX_CONFIG.format(tmp=self.tmp, servers=servers, port=self.port))
            self.process = subprocess.Popen(
                [
                    *DIE_WITH_PARENT,
                    binary,
                    "-p",
                    self.tmp,
                    "-e",
                    f"{self.tmp}/error.log",
                    "-c",
                    str(config),
                    "-g",
                    "daemon off;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_ready():
                return
            if "Address already in use" not in self.output():
                break
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def output(self) -> str:
        path = Path(self.tmp) / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
