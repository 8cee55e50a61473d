"""Run the router simulator (``inference/simulator.py``) as a subprocess for tests.

    with RouterSim("--chunks", "3", "--latency-ms", "50") as sim:
        requests.get(f"{sim.url}/api/v1/status", headers=sim.headers)

or as a fixture:

    @pytest.fixture(scope="module")
    def router_sim():
        with RouterSim("--sessions", "1,2") as sim:
            yield sim

The constructor starts the process and returns once ``/api/v1/status`` answers; ``stop()`` and
``start()`` take it down and bring it back on the same port (for outage tests). ``start()`` on a
running simulator does nothing, so ``RouterSim(...).start()`` is fine too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Kept in sync with inference.simulator.DEFAULT_TOKEN; not imported so that test modules using
# this helper do not pull gevent into the test process.
DEFAULT_TOKEN = "default-dev-token"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# A fresh port may be taken by someone else between probing and binding; retry the first start.
FIRST_START_ATTEMPTS = 3


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _option_value(args: tuple[str, ...], name: str) -> str | None:
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


# Prefix for a test's long-lived child processes: the kernel sends it SIGTERM when the test
# process dies, however it dies (a SIGKILLed or timed-out pytest left gunicorn masters behind).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class RouterSim:
    host = "127.0.0.1"

    def __init__(self, *args: str) -> None:
        self.args = tuple(str(arg) for arg in args)
        self.token = _option_value(self.args, "--token") or DEFAULT_TOKEN
        self.port = _free_port(self.host)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._started_once = False
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the simulator expects."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RouterSim:
        if self.running:
            return self
        attempts = 1 if self._started_once else FIRST_START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._spawn()
                break
            except RuntimeError:
                if attempt == attempts:
                    raise
                self.port = _free_port(self.host)
        self._started_once = True
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def output(self) -> str:
        """What the simulator printed (stdout and stderr) since the last start."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> RouterSim:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RouterSim({', '.join(map(repr, self.args))}) at {self.url}"

    def _spawn(self) -> None:
        if self._log is not None:
            self._log.close()
        # A file, not a pipe: nobody reads while tests run, and a full pipe would block the sim.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        command = [
            sys.executable,
            "-m",
            "inference.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]
        self._process = subprocess.Popen(
            [*DIE_WITH_PARENT, *command],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # Never leave a simulator behind, even if a test forgets stop().
        self._finalizer = weakref.finalize(self, _kill, self._process)
        try:
            self._wait_until_ready()
        except RuntimeError:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        probe = urllib.request.Request(f"{self.url}/api/v1/status", headers=self.headers)
        # No proxies: a developer's http_proxy must not swallow requests to 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"router simulator exited early:\n{self.output()}")
            try:
                with opener.open(probe, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers; a wrong status is the caller's business
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"router simulator did not answer in time:\n{self.output()}")
            time.sleep(0.05)


def run_portal_script(script: str, **extra_env: str) -> str:
    """Run `script` in a fresh interpreter with the portal's settings importable (for code
    that must run under gevent's monkey-patching, which this process cannot undo); its stdout,
    after asserting it exited 0."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "LOG_LEVEL": "WARNING",
        # A mutation run's mutant applies in the script too (docs/mutation.md).
        **{k: v for k, v in os.environ.items() if k == "MUTANT_UNDER_TEST"},
        **extra_env,
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
