"""A local 3-master Redis Cluster for the tests (and CI) on ports 7101-7103.

`ensure()` reuses a healthy cluster on those ports, or starts one in a temporary folder
(`redis-server --cluster-enabled yes` on each port, then `redis-cli --cluster create`) and
waits for `cluster_state:ok`. A file lock keeps two runs on one machine from starting it at
once; each run's keys carry its own prefix (portal/test_settings.py), so runs share it safely.

Started by a test session, the servers die with it (`setpriv --pdeathsig`), under any other
run that reused them too; so CI starts it once for every run with `python -m
tests.rediscluster start` (daemonized), as it starts Redis.
Without Django: `.ci/run` calls it before any settings exist.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
PORTS = (7101, 7102, 7103)
URL = f"redis://{HOST}:{PORTS[0]}/0"
STARTUP_TIMEOUT = 60.0
LOCK = Path(tempfile.gettempdir()) / "portal-redis-cluster.lock"
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def enabled() -> bool:
    """The test run uses a cluster (REDIS_CLUSTER=1 in its environment)."""
    return os.environ.get("REDIS_CLUSTER", "").strip().lower() in {"1", "true", "yes", "on"}


def client_for_env():
    """A client for the environment's REDIS_URL: a cluster client when the run uses one."""
    import redis

    url = os.environ["REDIS_URL"]
    if enabled():
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


def _node(port: int):
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)


def _info(port: int) -> dict | None:
    try:
        with _node(port) as node:
            return node.cluster("INFO")
    except Exception:
        return None


def healthy() -> bool:
    for port in PORTS:
        info = _info(port)
        if not info or info.get("cluster_state") != "ok":
            return False
        if int(info.get("cluster_known_nodes", 0)) < len(PORTS):
            return False
    return True


def ensure(*, daemonize: bool = False) -> list[subprocess.Popen]:
    """A healthy cluster on PORTS; the processes this call started (none if reused)."""
    started: list[subprocess.Popen] = []
    LOCK.touch(exist_ok=True)
    with open(LOCK) as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if healthy():
            return started
        folder = tempfile.mkdtemp(prefix="portal-redis-cluster-")
        for port in PORTS:
            if _info(port) is not None:
                continue  # a node of an earlier start: joined below if it has no slots
            args = [
                "redis-server",
                "--port", str(port),
                "--bind", HOST,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"{folder}/nodes-{port}.conf",
                "--cluster-node-timeout", "5000",
                "--dir", folder,
                "--save", "",
                "--appendonly", "no",
            ]  # fmt: skip
            if daemonize:
                args += ["--daemonize", "yes", "--logfile", f"{folder}/{port}.log"]
                subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
            else:
                log = open(f"{folder}/{port}.log", "wb")  # noqa: SIM115 - the server's, kept open
                started.append(
                    subprocess.Popen(DIE_WITH_PARENT + args, stdout=log, stderr=subprocess.STDOUT)
                )
        _wait(lambda: all(_info(port) is not None for port in PORTS), "nodes to answer")
        if not any(int(_info(port).get("cluster_slots_assigned", 0)) for port in PORTS):  # type: ignore[union-attr]
            nodes = [f"{HOST}:{port}" for port in PORTS]
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *nodes,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=STARTUP_TIMEOUT,
            )
        _wait(healthy, "cluster_state:ok on every node")
    return started


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    delay = 0.05
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster on {PORTS}: timed out waiting for {what}")
        time.sleep(delay)  # polling a condition, with a deadline
        delay = min(delay * 2, 0.5)


if __name__ == "__main__":
    if sys.argv[1:] != ["start"]:
        sys.exit("usage: python -m tests.rediscluster start")
    ensure(daemonize=True)
    print(f"Redis Cluster ok on {', '.join(str(p) for p in PORTS)}")
