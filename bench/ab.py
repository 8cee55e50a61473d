"""Two versions of the portal side by side, measured in interleaved rounds (bench/NOTES.md).

    python bench/ab.py /tmp/before .  --rounds 4 --seconds 8 --connections 1,16

On a machine shared with other work, rates swing from minute to minute: one run of each
version, one after the other, compares two moments, not two versions. Here both versions are
served at once (2 gevent workers each, production settings as bench/run.py serves them) on one
router simulator, one database and one Redis (only the benchmark's keys are deleted first: the
database may be shared), and wrk drives them in turns, the first of a round alternating. Per
run: rate, p50, errors (non-2xx and socket errors) and the workers' CPU per request from /proc.
A and B are checkouts (e.g. a `git archive` of the commit before). BENCH_DATABASE_URL and
BENCH_REDIS_URL as for bench/run.py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run


def serve(checkout: Path, port: int, work: Path, name: str) -> subprocess.Popen:
    handle = (work / f"gunicorn-{name}.log").open("wb")
    process = subprocess.Popen(
        [str(run.VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "portal.wsgi:application"],
        cwd=checkout,
        env=run.base_env(
            HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", ACCESS_LOG="-", ENV_FILE=""
        ),
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=run.raise_nofile,
    )
    run._children.append(process)
    return process


def measure(web: subprocess.Popen, url: str, body: dict, key: str, c: int, seconds: int) -> dict:
    workers = run.children_of(web.pid)
    before = run.cpu_seconds(workers)
    figures = run.wrk(url, "/v1/chat/completions", body, connections=c, seconds=seconds, keys=[key])
    used = run.cpu_seconds(workers) - before
    figures["cpu_ms"] = round(used * 1000 / max(1, figures["requests"]), 3)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", default="1,16")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    run.raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="portal-ab-"))
    import redis

    try:
        run.fresh_database()
        # Only the benchmark's keys (its CACHE_KEY_PREFIX): the Redis database may be shared.
        client = redis.Redis.from_url(run.REDIS_URL)
        for name in client.scan_iter(match="portal-bench*", count=1000):
            client.delete(name)
        sim_port = run.free_port()
        simulator = [sys.executable, "-m", "inference.simulator", "--host", "127.0.0.1"]
        run.spawn(
            [*simulator, "--port", str(sim_port), "--chunks", "8"],
            env=run.base_env(),
            log_path=work / "sim.log",
        )
        sim_url = f"http://127.0.0.1:{sim_port}"
        run.wait_http(
            f"{sim_url}/api/v1/status", headers={"Authorization": "Bearer default-dev-token"}
        )
        run.manage("migrate", "--noinput")
        run.apply_config(sim_url, sim_url)
        key = run.manage(
            "apikey_create", "--email", "ab@bench.invalid", "--name", "ab", "--create-user"
        ).strip()
        servers = {}
        for name, checkout in (("A", args.a.resolve()), ("B", args.b.resolve())):
            port = run.free_port()
            servers[name] = (serve(checkout, port, work, name), f"http://127.0.0.1:{port}")
        chat = {
            "model": run.FAST_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        }
        for _web, url in servers.values():
            run.wait_http(f"{url}/healthz")
            run.wrk(url, "/v1/chat/completions", chat, connections=4, seconds=2, keys=[key])
        results: dict = {(n, c): [] for n in servers for c in connections}
        for r in range(args.rounds):
            order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
            for c in connections:
                for name in order:
                    web, url = servers[name]
                    figures = measure(web, url, chat, key, c, args.seconds)
                    results[(name, c)].append(figures)
                    print(f"round {r + 1} {name} c={c}: {figures}", flush=True)
        print(f"\nlogs: {work}")
        for c in connections:
            for name in servers:
                runs = results[(name, c)]
                cpu = [f["cpu_ms"] for f in runs]
                print(
                    f"{name} c={c}: cpu ms/request median {statistics.median(cpu):.3f} "
                    f"({min(cpu):.3f}-{max(cpu):.3f}), rps median "
                    f"{statistics.median(f['rps'] for f in runs):.0f}, p50 median "
                    f"{statistics.median(f['p50_ms'] for f in runs):.3f} ms, errors "
                    f"{sum(f['errors'] for f in runs)}"
                )
    finally:
        run.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
