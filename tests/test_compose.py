"""docker-compose.yml as an operator runs it: every variable of `.env` reaches every portal
container, one `migrate` runs before web, worker and beat, the web healthcheck works on the
real domain, web and worker share the usage spool, and the image keeps `.env`, `.venv` and
`var/` out.

There is no Docker engine here: `docker-compose config` (Debian's docker-compose package, which
CI installs) checks the file and resolves each service's environment, and each service's
command is run natively with that environment (hosts and paths made local).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from tests.routersim import REPO_ROOT
from tests.servehelpers import SERVED_KEY_PREFIX, free_port, served_database, static_root

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PORTAL_SERVICES = ("migrate", "web", "worker", "beat")
VENV_BIN = Path(sys.executable).parent


def test_every_portal_service_reads_the_env_file():
    for name in PORTAL_SERVICES:
        assert SERVICES[name]["env_file"] == ".env", name


def test_one_migrate_runs_before_web_worker_and_beat():
    assert SERVICES["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert SERVICES["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        condition = SERVICES[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
        assert "migrate" not in " ".join(SERVICES[name]["command"]), name


def test_web_and_worker_share_the_usage_spool():
    spool = SERVICES["web"]["environment"]["USAGE_SPOOL_DIR"]
    assert SERVICES["worker"]["environment"]["USAGE_SPOOL_DIR"] == spool
    for name in ("web", "worker"):
        assert f"spool:{spool}" in SERVICES[name]["volumes"], name
    assert "spool" in COMPOSE["volumes"]


def test_the_image_leaves_secrets_and_local_state_out():
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv/", "var/"} <= ignored
    assert "!.env.example" in ignored


def _compose_config(tmp_path: Path, dotenv: str) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (CI installs Debian's package)")
    shutil.copy(REPO_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(dotenv)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    result = subprocess.run(
        ["docker-compose", "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_docker_compose_config_accepts_the_file_and_every_variable_reaches_the_containers(
    tmp_path,
):
    operator = (REPO_ROOT / ".env.example").read_text() + (
        "\nMFA_SECRET=mfa-secret\nSECRET_KEY_FALLBACKS=old-one\nTRUSTED_PROXY_COUNT=2\n"
        "LIMITS_FAIL_OPEN=1\nLIMITS_INFLIGHT_LEASE_SECONDS=600\nALLOWED_HOSTS=portal.example.com\n"
    )
    resolved = _compose_config(tmp_path, operator)["services"]
    for name in PORTAL_SERVICES:
        env = resolved[name]["environment"]
        assert env["MFA_SECRET"] == "mfa-secret", name
        assert env["SECRET_KEY_FALLBACKS"] == "old-one", name
        assert env["TRUSTED_PROXY_COUNT"] == "2", name
        assert env["LIMITS_FAIL_OPEN"] == "1", name
        assert env["LIMITS_INFLIGHT_LEASE_SECONDS"] == "600", name
        assert env["ALLOWED_HOSTS"] == "portal.example.com", name
        assert env["DEBUG"] == "0", name  # compose's own decision wins over a laptop .env
        assert env["REDIS_URL"] == "redis://redis:6379/0", name


def test_docker_compose_config_refuses_a_missing_secret_key(tmp_path):
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (CI installs Debian's package)")
    shutil.copy(REPO_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text("DEBUG=0\n")
    result = subprocess.run(
        ["docker-compose", "config", "-q"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


# --- each service's command, natively --------------------------------------------------------


def _container_env(service: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """What the container gets (env_file .env from .env.example, then `environment:`), with
    compose's hosts and paths made local."""
    dotenv = {k: v for k, v in dotenv_values(REPO_ROOT / ".env.example").items() if v is not None}

    def interpolate(value: str) -> str:
        return re.sub(
            r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}",
            lambda m: dotenv.get(m.group(1)) or m.group(2) or "",
            str(value),
        )

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(dotenv)
    env.update({k: interpolate(v) for k, v in SERVICES[service]["environment"].items()})
    env.update(
        ENV_FILE="",  # a container has no .env file, only its variables
        SECRET_KEY="an-operators-own-secret",  # .env.example's is refused with DEBUG off
        DATABASE_URL=served_database(),
        STATIC_ROOT=static_root(),
        USAGE_SPOOL_DIR=str(tmp_path / "spool"),
        CACHE_KEY_PREFIX=SERVED_KEY_PREFIX,
    )
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    else:
        env.pop("REDIS_URL")
        env["ALLOW_LOCAL_STATE"] = "1"
    if "PROMETHEUS_MULTIPROC_DIR" in env:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
        (tmp_path / "metrics").mkdir(exist_ok=True)
    env.update(overrides)
    return env


def _command(service: str, tmp_path: Path) -> list[str]:
    command = [part.replace("/app/", f"{tmp_path}/") for part in SERVICES[service]["command"]]
    if command[0] in ("python", "gunicorn", "celery"):
        command[0] = sys.executable if command[0] == "python" else str(VENV_BIN / command[0])
    return command


def _healthcheck(service: str) -> list[str]:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [sys.executable if part == "python" else part for part in test[1:]]


class _Service:
    def __init__(self, command: list[str], env: dict[str, str], log: Path):
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_migrate_then_web_and_its_healthcheck_on_the_real_domain(tmp_path):
    migrate = subprocess.run(
        _command("migrate", tmp_path),
        cwd=REPO_ROOT,
        env=_container_env("migrate", tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr

    port = str(free_port())
    env = _container_env(
        "web", tmp_path, ALLOWED_HOSTS="portal.example.com", PORT=port, HOST="127.0.0.1"
    )
    web = _Service(_command("web", tmp_path), env, tmp_path / "web.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(
                _healthcheck("web"), cwd=REPO_ROOT, env=env, capture_output=True, text=True
            )
            if check.returncode == 0:
                break
            assert web.process.poll() is None, web.log.read_text()
            assert time.monotonic() < deadline, check.stderr + web.log.read_text()
            time.sleep(0.5)
        # What the healthcheck used to do: ask for Host 127.0.0.1, which the domain refuses.
        old = subprocess.run(
            [
                sys.executable,
                "-c",
                "import urllib.request as u; "
                f"u.urlopen('http://127.0.0.1:{port}/healthz', timeout=2)",
            ],
            capture_output=True,
            text=True,
        )
        assert old.returncode != 0
    finally:
        web.stop()


@pytest.mark.slow
@pytest.mark.parametrize("service", ["worker", "beat"])
def test_worker_and_beat_start_with_the_container_environment(tmp_path, service):
    proc = _Service(
        _command(service, tmp_path), _container_env(service, tmp_path), tmp_path / "log"
    )
    try:
        deadline = time.monotonic() + 30
        ready = "ready." if service == "worker" else "beat: Starting"
        while ready not in proc.log.read_text():
            assert proc.process.poll() is None, proc.log.read_text()
            assert time.monotonic() < deadline, proc.log.read_text()
            time.sleep(0.3)
    finally:
        proc.stop()


@pytest.mark.slow
def test_the_router_simulator_and_its_healthcheck(tmp_path):
    port = free_port()
    command = _command("routersim", tmp_path)
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    sim = _Service(command, {"PATH": os.environ["PATH"]}, tmp_path / "sim.log")
    check = [part.replace(":5010", f":{port}") for part in _healthcheck("routersim")]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(check, cwd=REPO_ROOT, capture_output=True).returncode != 0:
            assert sim.process.poll() is None, sim.log.read_text()
            assert time.monotonic() < deadline, sim.log.read_text()
            time.sleep(0.3)
    finally:
        sim.stop()
