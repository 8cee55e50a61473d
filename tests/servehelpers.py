"""The portal as production runs it, for tests: gunicorn (gevent workers, gunicorn.conf.py)
in a subprocess, on a database of its own that `manage.py` commands set up like an operator
would (migrate, apply_config, apikey_create).

The served database is not pytest-django's test database (the server cannot see a test's
uncommitted rows): on PostgreSQL it is `<test db name>_served` (made once per session), on the
embedded default a SQLite file in a temporary folder. REDIS_URL, when set, is shared with the
test process.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from tests.routersim import REPO_ROOT, RouterSim

VENV_BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 60.0
MODEL = "cortensor/llama-3.1-8b"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        SECRET_KEY="served-test-secret-key",
        APIKEY_HASH_SECRET="served-test-apikey-secret",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        EMAIL_URL="locmem:",
        CATALOG_CHECK_MS="0",
        CACHE_KEY_PREFIX="portal-served",
        DEBUG="0",
    )
    # The test settings' own defaults are not the served process's: it runs production's.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT", "PORTAL_TESTING"):
        env.pop(name, None)
    return env


@functools.cache
def served_database() -> str:
    """A migrated database URL for served processes (made once per test session)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg
        from psycopg import sql

        parsed = urlparse(url)
        name = f"test_{parsed.path.lstrip('/')}_served"
        admin = parsed._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        served = parsed._replace(path=f"/{name}").geturl()
    else:
        served = f"sqlite:///{tempfile.mkdtemp(prefix='portal-served-')}/db.sqlite3"
    manage("migrate", "--noinput", database_url=served)
    return served


def manage(*args: str, database_url: str, env: dict[str, str] | None = None) -> str:
    full_env = {**_base_env(), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **(env or {})}
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def provision(sim: RouterSim, *, email: str) -> tuple[str, str]:
    """Point the served catalog at `sim`, make a user with a key: (database url, raw key)."""
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
                "id": MODEL,
                "pool": f"sim-{sim.port}",
                "chat_template": "llama3",
                "max_tokens": 1024,
                "context_length": 8192,
            }
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    try:
        manage("apply_config", handle.name, database_url=database_url)
    finally:
        os.unlink(handle.name)
    key = manage(
        "apikey_create",
        "--email",
        email,
        "--name",
        "served",
        "--create-user",
        database_url=database_url,
    ).strip()
    return database_url, key


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py portal.wsgi:application` with the given environment."""

    def __init__(self, *, database_url: str, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log")  # noqa: SIM115
        self.env = {
            **_base_env(),
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            **env,
        }
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "portal.wsgi:application"],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
