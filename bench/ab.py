#!/usr/bin/env python
"""Two versions of the portal side by side, measured in interleaved rounds: for deciding one
step of the hot path on a machine shared with other work, where rates swing from minute to
minute but two servers measured in turns see the same load.

    bench/ab.py /tmp/before .                 (A = a `git archive` of the previous commit)
    bench/ab.py A B --rounds 4 --seconds 8 --connections 1,16 --profile 15

A and B are checkouts; each is served by its own gunicorn (2 gevent workers, production
settings as bench/run.py serves them) on one router simulator, one database and one Redis
(the database is migrated and seeded from B; of Redis, only the benchmark's keys are
deleted: the database may be shared). Every round runs wrk against A and B at each
connection count, taking turns first, and prints per run: requests/s, p50, non-2xx answers
and the workers' CPU per request (from /proc). --profile N py-spies one worker of each for
N seconds at the last connection count after the rounds. --strace counts each side's
network syscalls over 300 sequential requests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402

SIMULATOR = (sys.executable, "-m", "inference.simulator", "--host", "127.0.0.1")
ROUTER_AUTH = {"Authorization": "Bearer default-dev-token"}
PY_SPY = ("py-spy", "record", "--nonblocking", "-f", "raw")


def serve(checkout: Path, port: int, log_dir: Path, name: str) -> subprocess.Popen:
    env = run.base_env(
        HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", LOG_LEVEL="WARNING", ACCESS_LOG="-"
    )
    return run.spawn(
        [str(run.VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "portal.wsgi:application"],
        env=env,
        log_path=log_dir / f"gunicorn-{name}.log",
        cwd=checkout,
    )


def measure(url: str, master: int, body: dict, key: str, connections: int, seconds: int) -> dict:
    workers = run.children_of(master)
    before = run.cpu_seconds(workers)
    figures = run.wrk(
        url, "/v1/chat/completions", body, connections=connections, seconds=seconds, keys=[key]
    )
    used = run.cpu_seconds(workers) - before
    figures["cpu_ms"] = round(used * 1000 / max(1, figures["requests"]), 3)
    return figures


def strace_count(url: str, master: int, body: dict, key: str) -> str:
    workers = run.children_of(master)
    out = Path(tempfile.mkdtemp(prefix="ab-strace-")) / "strace.txt"
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-e", "trace=network", "-o", str(out)]
        + [arg for pid in workers for arg in ("-p", str(pid))],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # strace attaches
    data = json.dumps(body).encode()
    for _ in range(300):
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            url + "/v1/chat/completions",
            data=data,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
            answer.read()
    time.sleep(0.5)  # the usage writer's last batch, counted with the requests
    tracer.terminate()
    tracer.wait()
    return out.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument(
        "--connections", type=lambda t: [int(c) for c in t.split(",")], default=[1, 16]
    )
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds, 0: none")
    parser.add_argument("--strace", action="store_true")
    args = parser.parse_args()
    sides = {"A": Path(args.a).resolve(), "B": Path(args.b).resolve()}
    work = Path(os.environ.get("AB_LOGS") or tempfile.mkdtemp(prefix="ab-logs-"))
    work.mkdir(exist_ok=True)
    print(f"logs and profiles in {work}", flush=True)
    run.raise_nofile()
    import redis

    try:
        run.fresh_database()
        # Only the benchmark's keys (its CACHE_KEY_PREFIX): the Redis database may be shared.
        client = redis.Redis.from_url(run.REDIS_URL)
        for name in client.scan_iter(match="portal-bench*", count=1000):
            client.delete(name)
        fast_port = run.free_port()
        run.spawn(
            [*SIMULATOR, "--port", str(fast_port), "--chunks", "8"],
            env=run.base_env(),
            log_path=work / "sim.log",
        )
        fast_url = f"http://127.0.0.1:{fast_port}"
        run.wait_http(f"{fast_url}/api/v1/status", headers=ROUTER_AUTH)
        run.manage("migrate", "--noinput")
        run.apply_config(fast_url, fast_url)
        key = run.manage(
            "apikey_create", "--email", "ab@bench.invalid", "--name", "ab", "--create-user"
        ).strip()
        masters, urls = {}, {}
        for name, checkout in sides.items():
            port = run.free_port()
            masters[name] = serve(checkout, port, work, name).pid
            urls[name] = f"http://127.0.0.1:{port}"
            run.wait_http(f"{urls[name]}/healthz")
        chat = {
            "model": run.FAST_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        }
        for name in sides:
            run.wrk(urls[name], "/v1/chat/completions", chat, connections=4, seconds=2, keys=[key])
        results: dict = {name: {c: [] for c in args.connections} for name in sides}
        for round_ in range(args.rounds):
            order = ["A", "B"] if round_ % 2 == 0 else ["B", "A"]
            for connections in args.connections:
                for name in order:
                    figures = measure(
                        urls[name], masters[name], chat, key, connections, args.seconds
                    )
                    results[name][connections].append(figures)
                    print(
                        f"round {round_ + 1} {name} c={connections}: rps {figures['rps']:.0f} "
                        f"p50 {figures['p50_ms']} ms cpu/req {figures['cpu_ms']} ms "
                        f"errors {figures['errors']} load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        for connections in args.connections:
            for name in sides:
                runs = results[name][connections]
                cpus = sorted(r["cpu_ms"] for r in runs)
                p50s = sorted(r["p50_ms"] for r in runs)
                print(
                    f"{name} c={connections}: cpu/req median {cpus[len(cpus) // 2]} "
                    f"({cpus[0]}-{cpus[-1]}) p50 median {p50s[len(p50s) // 2]} "
                    f"rps {[round(r['rps']) for r in runs]} "
                    f"errors {sum(r['errors'] for r in runs)}"
                )
        if args.strace:
            for name in sides:
                print(f"--- strace {name}\n{strace_count(urls[name], masters[name], chat, key)}")
        if args.profile:
            for name in sides:
                worker = run.children_of(masters[name])[0]
                out = work / f"profile-{name}.txt"
                spy = subprocess.Popen(
                    [*PY_SPY, "-d", str(args.profile), "-o", str(out), "-p", str(worker)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                run.wrk(
                    urls[name],
                    "/v1/chat/completions",
                    chat,
                    connections=args.connections[-1],
                    seconds=args.profile + 2,
                    keys=[key],
                )
                spy.wait()
                print(f"profile {name}: {out}")
    finally:
        run.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
