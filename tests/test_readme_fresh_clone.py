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


def _served_by_session(port: int, session: int) -> bool:
    """Whether the socket listening on `port` belongs to a process of `session` (Linux's
    /proc): a port picked free may be bound by someone else before `make run` binds it, and
    that someone may answer /healthz too."""
    inodes = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:] if table.exists() else ():
            fields = line.split()
            listening = fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            if os.getsid(int(process.name)) != session:
                continue
            if any(os.readlink(fd) in inodes for fd in (process / "fd").iterdir()):
                return True
        except OSError:  # it ended meanwhile
            continue
    return False


def _make_run_served(
    proc: subprocess.Popen, log: Path, since: int, port: int, sim_port: int, timeout: float = 180
) -> bool:
    """Wait until `make run` (started in a session of its own, writing to `log` from byte
    `since`) serves /healthz on `port` and its simulator listens on `sim_port`; False if one
    of them found its port taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # runserver's "That port is already in use", the simulator's "Address already in use"
        if b"already in use" in log.read_bytes()[since:]:
            return False
        if proc.poll() is not None:
            raise AssertionError(f"make run exited {proc.returncode}:\n{log.read_text()}")
        if _served_by_session(port, proc.pid) and _served_by_session(sim_port, proc.pid):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                return True
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.5)
    raise AssertionError(f"make run did not serve on port {port}:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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
    log = clone / "make-run.log"
    try:
        # Free ports now may be taken before `make run` binds them (another run on the
        # machine): then it runs again on others, as a newcomer would. The log keeps every
        # attempt (the first one wrote .env; each seeds a fresh demo key).
        for _attempt in range(5):
            port, sim_port = free_port(), free_port()
            since = log.stat().st_size if log.exists() else 0
            with log.open("a") as out:
                proc = subprocess.Popen(
                    [
                        "make",
                        "-o",
                        ".venv/.installed",
                        "run",
                        f"PORT={port}",
                        f"SIM_PORT={sim_port}",
                    ],
                    cwd=clone,
                    env=_terminal_env(clone),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                served = _make_run_served(proc, log, since, port, sim_port)
            except BaseException:
                _stop(proc)
                raise
            if served:
                break
            _stop(proc)
            with log.open("a") as out:
                out.write(f"(test: port {port} or {sim_port} was taken: make run again)\n")
        else:
            raise AssertionError(f"make run never found its ports free:\n{log.read_text()}")
        try:
            yield clone, port, log
        finally:
            _stop(proc)
    finally:
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
    # The last attempt's key: `make run` again (a port was taken) seeds a fresh one.
    demo_key = re.findall(r"API key\s+(ctsk_\S+)", log.read_text())[-1]

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
