"""The README's quick start, walked as a newcomer walks it: a fresh clone, `make run` in one
terminal, and the README's commands, exactly as written, in a second terminal that has nothing
but the clone's own `.env` (written by `make run`) and an activated virtualenv.

The clone reuses this run's virtualenv (a symlink, and make's `-o .venv/.installed` so it is
not reinstalled) and its own free ports; everything else is what a newcomer gets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.routersim import REPO_ROOT
from tests.servehelpers import SYSTEM_VARIABLES, free_port

pytestmark = pytest.mark.slow

README = (REPO_ROOT / "README.md").read_text()


def _fresh_clone(target: Path) -> Path:
    """This checkout's HEAD, cloned (committed files only, as a newcomer gets them)."""
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO_ROOT), str(target)], **run)
    subprocess.run(["git", "-C", str(target), "fetch", "--quiet", str(REPO_ROOT), "HEAD"], **run)
    subprocess.run(["git", "-C", str(target), "checkout", "--quiet", "FETCH_HEAD"], **run)
    (target / ".venv").symlink_to(Path(sys.prefix))
    return target


def _terminal_env(clone: Path) -> dict[str, str]:
    """A new terminal with the virtualenv activated: no setting of this test process."""
    env = {name: os.environ[name] for name in SYSTEM_VARIABLES if name in os.environ}
    env["VIRTUAL_ENV"] = str(clone / ".venv")
    env["PATH"] = f"{clone / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited {proc.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"make run did not serve {url}:\n{log.read_text()}")


def _shell(command: str, clone: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=clone,
        env=_terminal_env(clone),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    clone = _fresh_clone(tmp_path_factory.mktemp("fresh") / "cortensor-portal")
    assert not (clone / ".env").exists()
    port, sim_port = free_port(), free_port()
    log = clone / "make-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "-o", ".venv/.installed", "run", f"PORT={port}", f"SIM_PORT={sim_port}"],
            cwd=clone,
            env=_terminal_env(clone),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield clone, port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(clone, ignore_errors=True)


def _readme_block(start: str) -> str:
    """The README's fenced block that begins with `start`."""
    for block in re.findall(r"```(?:sh|python)\n(.*?)```", README, re.S):
        if block.startswith(start):
            return block
    raise AssertionError(f"the README has no block starting with {start!r}")


def test_make_run_writes_a_development_env_and_never_overwrites_it(make_run):
    clone, _, log = make_run
    env_file = clone / ".env"
    text = env_file.read_text()
    assert "DEBUG=1" in text
    secret = re.search(r"^SECRET_KEY=(.+)$", text, re.M).group(1)
    assert secret.startswith("dev-") and secret != "dev-only-change-me"
    assert "wrote .env" in log.read_text()
    rerun = _shell("make -o .venv/.installed .env", clone)
    assert rerun.returncode == 0 and env_file.read_text() == text


def test_the_readme_commands_work_from_a_second_terminal(make_run):
    clone, port, log = make_run
    base = f"http://127.0.0.1:{port}"
    demo_key = re.search(r"API key\s+(ctsk_\S+)", log.read_text()).group(1)

    # The curl line, with make run's key.
    curl = _readme_block("curl ").replace("http://127.0.0.1:8000", base)
    curl = curl.replace("ctsk_…", demo_key)
    answer = _shell(curl, clone)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["choices"][0]["message"]["content"]

    # apikey_create, as the README writes it: a key the running server accepts (same secrets).
    created = _shell(
        "python manage.py apikey_create --email demo@example.com --name second-terminal", clone
    )
    assert created.returncode == 0, created.stderr
    new_key = created.stdout.strip()
    assert new_key.startswith("ctsk_")

    # The SDK snippet, with the new key.
    snippet = _readme_block("from openai import OpenAI").replace("http://127.0.0.1:8000", base)
    snippet = snippet.replace("ctsk_…", new_key)
    streamed = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", snippet],
        cwd=clone,
        env=_terminal_env(clone),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip()

    # apply_config, last: it points the default pool at the README's router address.
    applied = _shell("python manage.py apply_config config.example.json", clone)
    assert applied.returncode == 0, applied.stderr
    assert "`python manage.py limits_rebuild`" in README
    for command in ("python manage.py limits_rebuild", "python manage.py check"):
        done = _shell(command, clone)
        assert done.returncode == 0, f"{command}: {done.stderr}"
