#!/usr/bin/env python
"""`make bench`: what the portal adds to every call, measured end to end on this machine.

    .venv/bin/python bench/run.py [--quick] [--profile] [--http-only] [--out BENCHMARKS.md]

`--http-only` (about 5 minutes) skips step 1 and rewrites only the HTTP sections of the
report, keeping the database benches' sections the file has.

1. the aggregation figure (bench/aggregate.py, 1,000,000 usage records), the status and
   insights pages' (bench/ops_pages.py, a year of history, 5,000,000 records), the request
   log's (bench/request_log.py, 5,000,000 records), the notifications detector's
   (bench/notify_soak.py, 10,000 organizations and keys) and the capacity model's
   (bench/capacity.py, 10,000,000 records: docs/scaling.md);
2. a fresh PostgreSQL database `portal_bench` (BENCH_DATABASE_URL) and Redis db 9
   (BENCH_REDIS_URL) set up like an operator does: migrate, `apply_config`, `apikey_create`;
3. two router simulators (`python -m inference.simulator`, TCP_NODELAY like nginx in front
   of a real router): one with no latency for request rates, one with a chunk delay so that
   streams stay open;
4. the portal as `make serve` runs it: gunicorn, gevent workers, 2 of them, full pipeline
   (key auth from the Redis cache, limits in Redis on a generous plan, routing, a durable
   usage record per request, JSON access log);
5. wrk (Debian's; installed with apt-get if missing) at 1, 16 and 64 connections against the
   portal and against the simulator directly; 1,000 concurrent SSE streams with an asyncio
   client against both; RSS of each worker while holding them; auth and routing cost with
   10 and with 100,000 keys in the table.

It writes BENCHMARKS.md (the machine, the versions, the command, the figures against the
targets) and prints the figures as JSON. All traffic goes to 127.0.0.1. About 12 minutes (the
5,000,000 records of the insights figure take half of it; `--quick` uses 200,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent

from bench.sse import many_streams, one_stream  # noqa: E402

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
SECRET = "bench-only-secret-key"
HASH_SECRET = "bench-only-apikey-hash-secret"
FAST_MODEL, STREAM_MODEL = "bench/fast", "bench/stream"
STREAM_CHUNKS, STREAM_CHUNK_DELAY_MS = 40, 500
TARGETS = {  # issue #21
    "rps_16": 1000,
    "p50_added_ms_1": 2.0,
    "p99_added_ms_1": 6.0,
    "ttft_1_added_p50_ms": 3.0,  # one stream at a time, chat and legacy completions
    "stream_errors": 0,
    "ttft_added_p50_ms": 10.0,  # 1,000 concurrent streams
    "rss_mb": 150,
    "worker_cpu_ms_16": 2.6,  # the last round's figure: reported, and to be below it
}
TTFT_SEQUENTIAL = 300  # streams one at a time, for the time to first token at one connection

_children: list[subprocess.Popen] = []


# --- helpers ------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PROMETHEUS_MULTIPROC_DIR"}}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        SECRET_KEY=SECRET,
        APIKEY_HASH_SECRET=HASH_SECRET,
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        CACHE_KEY_PREFIX="portal-bench",
    )
    env.update(extra)
    return env


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stderr}")
    return result.stdout


def spawn(
    command: list[str], *, env: dict[str, str], log_path: Path, cwd: Path = ROOT
) -> subprocess.Popen:
    handle = log_path.open("wb")
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=raise_nofile,
    )
    _children.append(process)
    return process


def stop_all() -> None:
    for process in reversed(_children):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in _children:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float = 60.0, headers: dict | None = None) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=2):  # noqa: S310 - http://127.0.0.1 only
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def cpu_of_the_rest(simulator_pid: int) -> dict[str, float]:
    """CPU seconds so far of what shares the 2 CPUs with the workers: the simulator, every
    Redis and PostgreSQL process, and this script's finished children (wrk)."""
    totals = {"simulator": cpu_seconds([simulator_pid]), "redis": 0.0, "postgresql": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name == "redis-server":
            totals["redis"] += cpu_seconds([int(entry.name)])
        elif name == "postgres":
            totals["postgresql"] += cpu_seconds([int(entry.name)])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    totals["wrk"] = children.ru_utime + children.ru_stime
    return totals


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


# --- machine and versions -----------------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_before": os.getloadavg(),
    }


def versions() -> dict:
    from importlib.metadata import version

    import psycopg
    import redis

    found = {"python": platform.python_version()}
    for name in ("django", "gunicorn", "gevent", "psycopg", "redis", "celery"):
        found[name] = version(name)
    with psycopg.connect(DATABASE_URL) as conn:
        found["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    found["redis_server"] = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    found["wrk"] = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        .stdout.split("\n")[0]
        .split(" [")[0]
        .removeprefix("wrk ")
        .strip()
        or "?"
    )
    return found


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("wrk missing: apt-get install -y wrk")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL
    )
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL
        )


# --- set-up ---------------------------------------------------------------------------------------


def fresh_database() -> None:
    import psycopg
    from psycopg import sql

    parsed = urlparse(DATABASE_URL)
    name = parsed.path.lstrip("/")
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_script(script: str, *args: str, env: dict | None = None) -> dict:
    """Run one of bench/'s figure scripts; its report is the JSON object it prints last (a
    failed run's is its stderr's tail)."""
    result = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=ROOT,
        env=env or base_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    out = result.stdout
    try:
        return json.loads(out[out.index("{") :])
    except ValueError:
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": result.stderr.strip()[-500:]}


def run_aggregate(records: int) -> dict:
    log(f"aggregation benchmark (bench/aggregate.py, {records:,} records)")
    return run_script("aggregate.py", "--records", str(records))


def run_request_log(records: int) -> dict:
    log(f"request log pages (bench/request_log.py, {records:,} records)")
    return run_script("request_log.py", "--records", str(records))


def run_notify_soak(orgs: int) -> dict:
    log(f"notifications detector (bench/notify_soak.py, {orgs:,} organizations and keys)")
    return run_script("notify_soak.py", "--orgs", str(orgs))


def run_ops_pages(records: int) -> dict:
    log(f"status and insights pages (bench/ops_pages.py, a year of history, {records:,} records)")
    return run_script("ops_pages.py", "--records", str(records))


def run_capacity(records: int) -> dict:
    """The capacity model's figures (bench/capacity.py, docs/scaling.md): its own database
    (`<bench database>_capacity`) and its own Redis server."""
    log(f"capacity figures (bench/capacity.py, {records:,} records)")
    env = {**base_env(), "CAPACITY_DATABASE_URL": f"{DATABASE_URL}_capacity"}
    return run_script("capacity.py", "--records", str(records), env=env)


def apply_config(fast_url: str, stream_url: str) -> None:
    generous = {
        "name": "bench",
        "requests_per_minute": 10_000_000,
        "tokens_per_minute": 1_000_000_000,
        "requests_per_day": 100_000_000,
        "tokens_per_day": 10_000_000_000,
        "max_concurrent_requests": 10_000,
        "models": ["*"],
        "default": True,
    }
    config = {
        "plans": [generous],
        "pools": [
            {
                "name": "fast",
                "routers": [
                    {
                        "url": fast_url,
                        "api_version": "v1",
                        "session_id": 1,
                        "token": "default-dev-token",
                    }
                ],
            },
            {
                "name": "stream",
                "routers": [
                    {
                        "url": stream_url,
                        "api_version": "v1",
                        "session_id": 1,
                        "token": "default-dev-token",
                    }
                ],
            },
        ],
        "models": [
            {
                "id": FAST_MODEL,
                "pool": "fast",
                "chat_template": "llama3",
                "max_tokens": 256,
                "context_length": 8192,
            },
            {
                "id": STREAM_MODEL,
                "pool": "stream",
                "chat_template": "llama3",
                "max_tokens": 256,
                "context_length": 8192,
                "request_timeout": 120,
            },
        ],
    }
    path = Path(tempfile.mkdtemp(prefix="bench-")) / "config.json"
    path.write_text(json.dumps(config))
    manage("apply_config", str(path))


# --- load ---------------------------------------------------------------------------------------

LUA = """
local keys = {%(keys)s}
local n = 0
local body = [[%(body)s]]
request = function()
  n = n + 1
  local headers = {["Content-Type"] = "application/json"}
  if #keys > 0 then headers["Authorization"] = "Bearer " .. keys[(n %% #keys) + 1] end
  return wrk.format("POST", "%(path)s", headers, body)
end
-- every answer checked: its status and that its body carries the router's text
local threads = {}
setup = function(thread) table.insert(threads, thread) end
bad = 0
response = function(status, headers, answer)
  if status ~= 200 or not string.find(answer, "%(expect)s", 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write(string.format("Bad answers: %%d\\n", total))
end
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str,
    path: str,
    body: dict,
    *,
    connections: int,
    seconds: int,
    keys: list[str] = (),
    expect: str = "word0",
) -> dict:
    """wrk's figures; errors counts non-2xx answers, socket errors, and answers whose status is
    not 200 or whose body lacks `expect` (the simulator's first word, passed through)."""
    script = Path(tempfile.mkdtemp(prefix="bench-wrk-")) / "post.lua"
    script.write_text(
        LUA
        % {
            "keys": ",".join(f'"{k}"' for k in keys),
            "body": json.dumps(body),
            "path": path,
            "expect": expect,
        }
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = {
        "connections": connections,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
    }
    for q in ("50", "99"):
        value, unit = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        figures[f"p{q}_ms"] = round(float(value) * _UNITS[unit], 3)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), "
        r"timeout (\d+)",
        out,
    )
    figures["errors"] = (int(bad.group(1)) if bad else 0) + (
        sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    )
    # a non-2xx answer is counted by wrk and by the check: count it once
    checked = int(re.search(r"^Bad answers: (\d+)$", out, re.M).group(1))
    figures["errors"] += checked - (int(bad.group(1)) if bad else 0)
    figures["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return figures


def streams(
    port: int,
    path: str,
    headers: dict,
    body: dict,
    *,
    count: int,
    ramp: float,
    sample_rss_of: int | None = None,
) -> dict:
    rss: dict[int, float] = {}
    stop = False

    async def sample() -> None:
        while not stop:
            for pid in children_of(sample_rss_of):
                rss[pid] = max(rss.get(pid, 0.0), rss_mb(pid))
            await asyncio.sleep(0.5)

    async def main():
        nonlocal stop
        sampler = asyncio.create_task(sample()) if sample_rss_of else None
        results = await many_streams(
            "127.0.0.1",
            port,
            path,
            headers,
            json.dumps(body).encode(),
            count=count,
            ramp_seconds=ramp,
        )
        stop = True
        if sampler:
            await sampler
        return results

    started = time.perf_counter()
    results = asyncio.run(main())
    ttfts = [r.ttft * 1000 for r in results if r.ttft is not None]
    gaps = [g * 1000 for r in results for g in r.gaps]
    errors = [r.error for r in results if not r.ok]
    figures = {
        "streams": count,
        "ramp_seconds": ramp,
        "seconds": round(time.perf_counter() - started, 1),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "ttft_p50_ms": round(pct(ttfts, 50), 2),
        "ttft_p99_ms": round(pct(ttfts, 99), 2),
        "gap_p50_ms": round(pct(gaps, 50), 2),
        "gap_p99_ms": round(pct(gaps, 99), 2),
        "tokens": sum(r.tokens for r in results),
    }
    if sample_rss_of:
        figures["rss_mb_per_worker"] = {str(pid): round(v, 1) for pid, v in rss.items()}
    return figures


def sequential_ttft(port: int, path: str, headers: dict, body: dict, *, count: int) -> dict:
    """Time to the first content chunk of `count` streams sent one at a time (a new connection
    each, as the concurrent streams): what a lone client waits for its first token."""

    async def main():
        payload = json.dumps(body).encode()
        return [await one_stream("127.0.0.1", port, path, headers, payload) for _ in range(count)]

    results = asyncio.run(main())
    ttfts = [r.ttft * 1000 for r in results if r.ttft is not None]
    errors = [r.error for r in results if not r.ok]
    return {
        "streams": count,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "ttft_p50_ms": round(pct(ttfts, 50), 3),
        "ttft_p90_ms": round(pct(ttfts, 90), 3),
        "ttft_p99_ms": round(pct(ttfts, 99), 3),
    }


def ttft_one_at_a_time(
    fast_port: int, web_port: int, key: str, chat: dict, direct_body: dict, *, count: int | None
) -> dict:
    """Streams one at a time to the simulator without chunk delay: directly, then through
    /v1/chat/completions and /v1/completions, interleaved in rounds so that a change in the
    machine's load falls on all three alike."""
    count = count or TTFT_SEQUENTIAL
    rounds = 5
    portal = {"Authorization": f"Bearer {key}"}
    runs = {
        "direct": (
            fast_port,
            "/api/v1/completions",
            {"Authorization": "Bearer default-dev-token"},
            {**direct_body, "stream": True},
        ),
        "chat": (web_port, "/v1/chat/completions", portal, {**chat, "stream": True}),
        "completions": (
            web_port,
            "/v1/completions",
            portal,
            {
                "model": chat["model"],
                "prompt": "Say hello to the benchmark.",
                "max_tokens": chat["max_tokens"],
                "stream": True,
            },
        ),
    }
    parts: dict[str, list[dict]] = {name: [] for name in runs}
    log(f"time to first token, one stream at a time ({count} each, {rounds} rounds)")
    for _ in range(rounds):
        for name, (port, path, headers, body) in runs.items():
            parts[name].append(
                sequential_ttft(port, path, headers, body, count=max(1, count // rounds))
            )
    figures = {}
    for name, results in parts.items():
        figures[name] = {
            "streams": sum(r["streams"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "error_kinds": sorted({k for r in results for k in r["error_kinds"]})[:5],
            # the median of the rounds' medians: one busy round does not move it
            "ttft_p50_ms": round(sorted(r["ttft_p50_ms"] for r in results)[rounds // 2], 3),
            "ttft_p99_ms": round(max(r["ttft_p99_ms"] for r in results), 3),
        }
    log(f"  {figures}")
    return figures


def ceiling(
    router_url: str, key: str, body: dict, *, connections: tuple[int, ...], seconds: int, work: Path
) -> list[dict]:
    """The stack's own ceiling beside the portal (bench/ceiling.py): a minimal DRF view under
    the same gunicorn (2 gevent workers), first with only a Redis key lookup and counter, then
    also forwarding to the same simulator. What the portal's pipeline can at most come near."""
    import redis

    redis.Redis.from_url(REDIS_URL).set(f"ceiling:key:{key}", 1)
    rows = []
    for name, router, expect in (
        ("stack", "", "Hello."),
        ("stack + router call", router_url, "word0"),
    ):
        port = free_port()
        server = spawn(
            # -c /dev/null: not the portal's gunicorn.conf.py (no access log, default worker)
            [
                str(VENV_BIN / "gunicorn"),
                "-c",
                "/dev/null",
                "-k",
                "gevent",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "bench.ceiling:application",
            ],
            env=base_env(CEILING_ROUTER=router),
            log_path=work / f"ceiling-{len(rows)}.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        wrk(url, "/v1/chat/completions", body, connections=4, seconds=2, keys=[key], expect=expect)
        for count in connections:
            cpu_before = cpu_seconds(children_of(server.pid))
            figures = wrk(
                url,
                "/v1/chat/completions",
                body,
                connections=count,
                seconds=seconds,
                keys=[key],
                expect=expect,
            )
            used = cpu_seconds(children_of(server.pid)) - cpu_before
            figures["worker_cpu_ms_per_request"] = round(
                used * 1000 / max(1, figures["requests"]), 2
            )
            figures["name"] = name
            rows.append(figures)
            log(f"  ceiling {figures}")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        _children.remove(server)
    return rows


def bulk_keys(total: int, sample: int) -> list[str]:
    """Bring the key table to `total` keys (bulk_create with real hashes); return `sample` raw
    keys drawn from the whole table, made by this function."""
    os.environ.update(base_env())
    import django

    django.setup()
    from accounts.models import User
    from accounts.selectors import personal_org
    from apikeys import keyformat
    from apikeys.models import ApiKey

    # A new user gets a personal organization on the default plan: the keys' owner.
    owner, _ = User.objects.get_or_create(email="bulk@bench.invalid")
    org = personal_org(owner)
    have = ApiKey.objects.count()
    version = keyformat.current_hash_version()
    made: list[str] = []
    batch: list[ApiKey] = []
    for i in range(max(0, total - have)):
        public_id = keyformat.new_public_id()
        raw = keyformat.new_key(public_id)
        made.append(raw)
        batch.append(
            ApiKey(
                org=org,
                owner=owner,
                name=f"bulk {i}",
                public_id=public_id,
                secret_hash=keyformat.hash_key(raw),
                hash_version=version,
            )
        )
        if len(batch) == 5000:
            ApiKey.objects.bulk_create(batch)
            batch = []
    if batch:
        ApiKey.objects.bulk_create(batch)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE apikeys_apikey")
    connection.close()
    return random.sample(made, min(sample, len(made)))


def flush_key_cache() -> None:
    """Forget cached key entries (not limits or the catalog): the next use of a key is a miss."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(match="portal-bench:*apikey*", count=5000):
        client.delete(name)
    # ... and from the workers' memory (apikeys/cache.py): a notice that every entry changed.
    client.publish("portal-bench:apikey-changed", "*")


def cold_latency(url: str, keys: list[str], body: dict) -> dict:
    """First use of each key, one at a time: the cache miss, the DB lookup by unique index."""
    import http.client

    parsed = urlparse(url)
    samples = []
    for key in keys:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        started = time.perf_counter()
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        samples.append((time.perf_counter() - started) * 1000)
        conn.close()
        if response.status != 200:
            raise SystemExit(f"cold request answered {response.status}")
    return {
        "keys_used": len(keys),
        "p50_ms": round(pct(samples, 50), 2),
        "p90_ms": round(pct(samples, 90), 2),
    }


def profile(master_pid: int, url: str, body: dict, key: str, seconds: int, out: Path) -> None:
    pyspy = VENV_BIN / "py-spy"
    if not pyspy.exists():
        log("py-spy not installed (.venv/bin/pip install py-spy): no profile")
        return
    worker = children_of(master_pid)[0]
    spy = subprocess.Popen(
        [
            str(pyspy),
            "record",
            "-p",
            str(worker),
            "-d",
            str(seconds),
            "-f",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wrk(url, "/v1/chat/completions", body, connections=16, seconds=seconds, keys=[key])
    spy.wait(timeout=60)
    log(f"profile of worker {worker}: {out} (collapsed stacks)")


# --- report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def others_section(portal: list[dict]) -> list[str]:
    rows = [p for p in portal if "others_cpu_ms_per_request" in p]
    if not rows:
        return []
    names = list(rows[0]["others_cpu_ms_per_request"])
    lines = [
        "Where the 2 CPUs went, per request (CPU ms, from /proc over the same runs: every Redis "
        "and PostgreSQL process, the simulator, and wrk; the kernel's loopback work is counted "
        "in whichever process sent):",
        "",
        "| connections | portal workers | " + " | ".join(names) + " | all | 2 CPUs / all |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |",
    ]
    for p in rows:
        others = p["others_cpu_ms_per_request"]
        total = p["worker_cpu_ms_per_request"] + sum(others.values())
        lines.append(
            f"| {p['connections']} | {p['worker_cpu_ms_per_request']:.2f} | "
            + " | ".join(f"{others[n]:.2f}" for n in names)
            + f" | {total:.2f} | {2000 / total:.0f} rps |"
        )
    return [*lines, ""]


def ceiling_section(rows: list[dict], portal: list[dict]) -> list[str]:
    if not rows:
        return []
    by_c = {p["connections"]: p for p in portal}
    return [
        "## The stack's ceiling (bench/ceiling.py, same run)",
        "",
        "A minimal DRF view under the same gunicorn (2 gevent workers, no access log, no "
        "middleware): *stack* reads the bearer key from Redis (one GET), counts the request "
        "(one INCR) and answers a fixed chat completion; *stack + router call* also forwards the "
        "body to the same simulator over a pooled urllib3 connection and answers with its text. "
        "No limits, no usage record, no validation, no logging: what the portal's pipeline can "
        "at most come near on this machine.",
        "",
        "| server | connections | rps | p50 ms | p99 ms | errors | worker CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['name']} | {r['connections']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} | {r['worker_cpu_ms_per_request']:.2f} |"
            for r in rows
        ),
        *(
            f"| the portal (above) | {c} | {by_c[c]['rps']:.0f} | {by_c[c]['p50_ms']:.2f} | "
            f"{by_c[c]['p99_ms']:.2f} | {by_c[c]['errors']} | "
            f"{by_c[c].get('worker_cpu_ms_per_request', float('nan')):.2f} |"
            for c in sorted({r["connections"] for r in rows})
            if c in by_c
        ),
        "",
    ]


def write_report(path: Path, data: dict, command: str) -> None:
    m, v, ns, st, keys = (
        data["machine"],
        data["versions"],
        data["nonstream"],
        data["streams"],
        data["keys"],
    )
    rows = []
    for direct, portal in zip(ns["direct"], ns["portal"], strict=True):
        rows.append(
            f"| {portal['connections']} | {direct['rps']:.0f} | {direct['p50_ms']:.2f} | "
            f"{direct['p99_ms']:.2f} | {portal['rps']:.0f} | {portal['p50_ms']:.2f} | "
            f"{portal['p99_ms']:.2f} | {portal['p50_ms'] - direct['p50_ms']:+.2f} | "
            f"{portal['p99_ms'] - direct['p99_ms']:+.2f} | {portal['errors']} | "
            f"{portal.get('worker_cpu_ms_per_request', float('nan')):.2f} |"
        )
    by_c = {p["connections"]: p for p in ns["portal"]}
    direct_by_c = {p["connections"]: p for p in ns["direct"]}
    added_1 = by_c[1]["p50_ms"] - direct_by_c[1]["p50_ms"]
    ttft_added = st["portal"]["ttft_p50_ms"] - st["direct"]["ttft_p50_ms"]
    msg = st["messages"]
    msg_ttft_added = msg["ttft_p50_ms"] - st["direct"]["ttft_p50_ms"]
    rss_max = max(
        [
            *st["portal"].get("rss_mb_per_worker", {"-": 0}).values(),
            *msg.get("rss_mb_per_worker", {"-": 0}).values(),
        ]
    )
    k10, k100 = keys["10"], keys["100000"]
    flat = k100["warm"]["rps"] >= 0.85 * k10["warm"]["rps"] and (
        k100["cold"]["p50_ms"] <= k10["cold"]["p50_ms"] * 1.5 + 2
    )
    load = data["load"]
    added_99_1 = by_c[1]["p99_ms"] - direct_by_c[1]["p99_ms"]
    cpu_16 = by_c[16].get("worker_cpu_ms_per_request", float("nan"))
    t1 = data["ttft_1"]
    t1_added = {
        name: t1[name]["ttft_p50_ms"] - t1["direct"]["ttft_p50_ms"]
        for name in ("chat", "completions")
    }
    t1_errors = sum(t1[name]["errors"] for name in ("direct", "chat", "completions"))
    lines = [
        "# Benchmarks",
        "",
        "What the portal adds to each call, measured by `make bench` (`bench/run.py`): the portal "
        "as `make serve` runs it (gunicorn, 2 gevent workers, PostgreSQL, Redis, the full "
        "pipeline: API-key auth from process memory kept current by Redis change notices, "
        "limits in one Redis round trip on a "
        "generous plan, routing, one durable usage record per request, JSON access log) against "
        "the router simulator (`python -m inference.simulator`, no latency), beside the same "
        "load sent to the simulator directly. Added = portal minus direct.",
        "",
        f"Run: {data['started']} UTC, {data['seconds']:.0f} s. Command: `{command}`.",
        "",
        "## Machine and versions",
        "",
        f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB memory, Linux {m['kernel']}.",
        f"- Load average before: {', '.join(f'{x:.2f}' for x in m['load_before'])}; after: "
        f"{', '.join(f'{x:.2f}' for x in load['after'])}. "
        + (
            "The machine was **not idle** (other work was running): the load generator, the "
            "simulator and the portal also share these 2 CPUs, so the figures are conservative."
            if m["load_before"][0] > 0.5
            else "The machine was otherwise idle."
        ),
        "- " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "## Against the targets",
        "",
        "| target | figure | verdict |",
        "| --- | --- | --- |",
        f"| ≥ {TARGETS['rps_16']:,} requests/s at 16 connections, 2 workers, no errors | "
        f"{by_c[16]['rps']:.0f} rps, {by_c[16]['errors']} errors | "
        f"{verdict(by_c[16]['rps'] >= TARGETS['rps_16'] and by_c[16]['errors'] == 0)} |",
        f"| p50 added latency ≤ {TARGETS['p50_added_ms_1']} ms at 1 connection | "
        f"{added_1:.2f} ms | {verdict(added_1 <= TARGETS['p50_added_ms_1'])} |",
        f"| p99 added latency ≤ {TARGETS['p99_added_ms_1']:.0f} ms at 1 connection | "
        f"{added_99_1:.2f} ms | "
        + (
            verdict(added_99_1 <= TARGETS["p99_added_ms_1"])
            if added_99_1 >= 0
            # the direct run's tail was the slower one: another process took the CPU then
            else "**not measured** (the direct run's p99 was disturbed)"
        )
        + " |",
        f"| p50 added time to first token ≤ {TARGETS['ttft_1_added_p50_ms']:.0f} ms, one stream "
        f"at a time, `/v1/chat/completions` and `/v1/completions` | "
        f"{t1_added['chat']:.2f} and {t1_added['completions']:.2f} ms ({t1_errors} errors) | "
        f"{verdict(max(t1_added.values()) <= TARGETS['ttft_1_added_p50_ms'] and not t1_errors)} |",
        f"| 1,000 concurrent streams, zero errors | {st['portal']['errors']} errors "
        f"(`/v1/messages`: {msg['errors']}) | "
        f"{verdict(st['portal']['errors'] == 0 and msg['errors'] == 0)} |",
        f"| p50 added time to first token ≤ {TARGETS['ttft_added_p50_ms']:.0f} ms with 1,000 "
        f"concurrent streams | {ttft_added:.2f} ms (`/v1/messages`: {msg_ttft_added:.2f} ms) | "
        f"{verdict(max(ttft_added, msg_ttft_added) <= TARGETS['ttft_added_p50_ms'])} |",
        f"| ≤ {TARGETS['rss_mb']} MB RSS per worker holding the streams | {rss_max:.0f} MB | "
        f"{verdict(rss_max <= TARGETS['rss_mb'])} |",
        f"| worker CPU per request at 16 connections reported, below "
        f"{TARGETS['worker_cpu_ms_16']} ms | {cpu_16:.2f} ms | "
        f"{verdict(cpu_16 < TARGETS['worker_cpu_ms_16'])} |",
        f"| auth and routing cost flat from 10 to 100,000 keys | {k10['warm']['rps']:.0f} vs "
        f"{k100['warm']['rps']:.0f} rps; first use {k10['cold']['p50_ms']:.1f} vs "
        f"{k100['cold']['p50_ms']:.1f} ms | {verdict(flat)} |",
        "",
        "## Non-streaming (`POST /v1/chat/completions`, wrk, 10 s each)",
        "",
        "| connections | direct rps | direct p50 ms | direct p99 ms | portal rps | portal p50 ms "
        "| portal p99 ms | added p50 ms | added p99 ms | portal errors | worker CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Errors: answers that were not 200 or whose body lacked the router's text (wrk checks "
        "every answer), and socket errors. "
        "Worker CPU ms/request: user + system CPU of the two gunicorn workers during the run "
        "divided by the requests served (PostgreSQL, Redis, the simulator and wrk use more, on "
        "the same 2 CPUs). It depends much less on other load than the rates do: 2 CPUs / "
        f"{by_c[16].get('worker_cpu_ms_per_request', float('nan')):.2f} ms is the ceiling of "
        "the workers alone.",
        "",
        *others_section(ns["portal"]),
        *ceiling_section(data.get("ceiling", []), ns["portal"]),
        "## Time to first token, one stream at a time",
        "",
        f"{t1['chat']['streams']} streams each, one at a time on a new connection (like the "
        "concurrent streams below), to the simulator without latency: directly, through "
        "`/v1/chat/completions` and through `/v1/completions` with `stream: true`, in 5 "
        "interleaved rounds (p50: the median of the rounds' medians). Time to first token: "
        "from before the connection is opened to the first event with text.",
        "",
        "| | streams | errors | p50 ms | p99 ms | added p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {label} | {t1[name]['streams']} | {t1[name]['errors']} | "
            f"{t1[name]['ttft_p50_ms']:.2f} | {t1[name]['ttft_p99_ms']:.2f} | "
            + ("" if name == "direct" else f"{t1_added[name]:+.2f}")
            + " |"
            for label, name in (
                ("direct (simulator)", "direct"),
                ("`/v1/chat/completions`", "chat"),
                ("`/v1/completions`", "completions"),
            )
        ),
        "",
        "## Streaming (1,000 concurrent SSE streams, asyncio client)",
        "",
        f"Each stream: {STREAM_CHUNKS} chunks {STREAM_CHUNK_DELAY_MS} ms apart (the simulator's "
        f"chunk delay), so all {st['portal']['streams']:,} are open at once after a "
        f"{st['portal']['ramp_seconds']:.0f} s ramp (a burst of 1,000 connects in one "
        "millisecond would measure the listen backlog, not the gateway).",
        "",
        "Portal: `POST /v1/chat/completions`; messages: the same streams through "
        "`POST /v1/messages` (Anthropic's named events), run right after.",
        "",
        "| | direct | portal | added | messages | added |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| errors | {st['direct']['errors']} | {st['portal']['errors']} | | {msg['errors']} | |",
        *(
            f"| {label} (ms) | {st['direct'][name]:.2f} | {st['portal'][name]:.2f} | "
            f"{st['portal'][name] - st['direct'][name]:+.2f} | {msg[name]:.2f} | "
            f"{msg[name] - st['direct'][name]:+.2f} |"
            for label, name in (
                ("time to first token p50", "ttft_p50_ms"),
                ("time to first token p99", "ttft_p99_ms"),
                ("inter-chunk delay p50", "gap_p50_ms"),
                ("inter-chunk delay p99", "gap_p99_ms"),
            )
        ),
        f"| RSS per worker while holding them (MB) | | "
        f"{', '.join(f'{x:.0f}' for x in st['portal'].get('rss_mb_per_worker', {}).values())} | "
        f"| {', '.join(f'{x:.0f}' for x in msg.get('rss_mb_per_worker', {}).values())} | |",
        f"| RSS per worker idle, after warm-up (MB) | | "
        f"{', '.join(f'{x:.0f}' for x in data['rss_idle'].values())} | | | |",
        "",
        "## Authentication and routing cost against the size of the key table",
        "",
        "Keys inserted with `bulk_create` and real HMAC hashes. Warm: wrk, 16 connections, "
        "10 s, requests rotating over the keys used (all 10, or 200 drawn at random from "
        "100,000), after each was used once. First use: one request at a time with keys never "
        "used before (their cache entry removed), so each is a cache miss and one indexed "
        "lookup.",
        "",
        "| keys in the table | warm rps | warm p50 ms | warm p99 ms | first-use p50 ms | "
        "first-use p90 ms |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {n:,} | {keys[str(n)]['warm']['rps']:.0f} | {keys[str(n)]['warm']['p50_ms']:.2f} "
            f"| {keys[str(n)]['warm']['p99_ms']:.2f} | {keys[str(n)]['cold']['p50_ms']:.2f} | "
            f"{keys[str(n)]['cold']['p90_ms']:.2f} |"
            for n in (10, 100_000)
        ),
        "",
    ]
    database = [
        "## Usage aggregation (bench/aggregate.py)",
        "",
        "```json",
        json.dumps(data.get("aggregate", {}), indent=2),
        "```",
        "",
        "## Status page and staff insights (bench/ops_pages.py)",
        "",
        "A year of 5-minute status history for 8 models (841,000 rows), 50 incidents, and "
        "5,000,000 usage records over 30 days folded into the ledgers and the insights "
        "aggregates; each page timed through Django's test client, the status cache emptied "
        "before each request (targets: status < 50 ms, insights < 300 ms, p50).",
        "",
        "```json",
        json.dumps(data.get("ops_pages", {}), indent=2),
        "```",
        "",
        "## Request log (bench/request_log.py)",
        "",
        "5,000,000 usage records over 30 days, a fifth of them one organization's; `/requests` "
        "timed as its owner through Django's test client (the whole page): the first page, "
        "each filter, two combined, the 20th keyset page and a filtered CSV, with the index "
        "each query's plan used (target: first and filtered pages < 100 ms, p50).",
        "",
        "```json",
        json.dumps(data.get("request_log", {}), indent=2),
        "```",
        "",
        "## Notifications detector (bench/notify_soak.py)",
        "",
        "One run of the detector Celery beat runs every minute, over 10,000 organizations with "
        "a key each and their day and month counters in Redis (read in pipelined MGETs), one in "
        "ten past 80 % of its daily requests: the first run records those 1,000 crossings and "
        "enqueues their mail; the steady-state runs find nothing new (target: a run < 10 s).",
        "",
        "```json",
        json.dumps(data.get("notify_soak", {}), indent=2),
        "```",
        "",
        "## Capacity figures (bench/capacity.py)",
        "",
        "Per request through one gevent worker (CPU, Redis commands and bytes, PostgreSQL rows "
        "and bytes), the batch writer's records/s (multi-row INSERT against COPY), aggregation "
        "over 10,000,000 records, and a month's DELETE against its partition's DROP. What they "
        "mean for 1k/10k/100k requests/s: docs/scaling.md.",
        "",
        "```json",
        json.dumps(data.get("capacity", {}), indent=2),
        "```",
        "",
    ]
    if "aggregate" in data:
        lines += database
    else:  # --http-only: the database benches' sections as the file has them
        lines += _sections(path, DATABASE_SECTIONS)
    if data.get("notes"):
        lines += ["## Notes", "", *data["notes"], ""]
    else:
        lines += _sections(path, ("Notes",))
    path.write_text("\n".join(lines))


# The report's sections that the database benches write (kept as they are by --http-only).
DATABASE_SECTIONS = (
    "Usage aggregation",
    "Status page and staff insights",
    "Request log",
    "Notifications detector",
    "Capacity figures",
)


def _sections(path: Path, titles: tuple[str, ...]) -> list[str]:
    """The lines of the sections of `path` whose `## ` heading starts with one of `titles`,
    in the file's order."""
    if not path.exists():
        return []
    kept: list[str] = []
    keep = False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            keep = line[3:].startswith(titles)
        if keep:
            kept.append(line)
    return [*kept, ""] if kept and kept[-1] else kept


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the portal end to end.")
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    parser.add_argument("--profile", action="store_true", help="py-spy a worker at 16 conns")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument(
        "--records", type=int, default=1_000_000, help="usage records for the aggregation figure"
    )
    parser.add_argument("--notes", default="", help="a file of notes to append to the report")
    parser.add_argument(
        "--nonstream-only",
        action="store_true",
        help="experiments: only the non-streaming table, no report written",
    )
    parser.add_argument(
        "--streams-only",
        action="store_true",
        help="experiments: only the streams (direct, /v1/chat/completions, /v1/messages) back "
        "to back, no report written",
    )
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="the HTTP figures only (about 5 minutes): rewrites their sections of the report "
        "and keeps its database benches' sections as they are",
    )
    parser.add_argument(
        "--ttft-only",
        action="store_true",
        help="experiments: only the time to first token one stream at a time, no report",
    )
    parser.add_argument(
        "--connections",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=None,
        help="experiments: the non-streaming runs' connections, e.g. 1,16 (default 1,16,64)",
    )
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="experiment: synchronous_commit=off on the bench database",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="experiment: gunicorn without its access log"
    )
    args = parser.parse_args()
    seconds = 3 if args.quick else 10
    started = time.time()
    raise_nofile()
    ensure_wrk()
    data: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "machine": machine(),
    }
    work = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    import redis

    try:
        fresh_database()
        redis.Redis.from_url(REDIS_URL).flushdb()
        if args.async_commit:
            import psycopg

            with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
                conn.execute(
                    f"ALTER DATABASE {urlparse(DATABASE_URL).path.lstrip('/')} "
                    "SET synchronous_commit = off"
                )
        if not (args.nonstream_only or args.streams_only or args.ttft_only or args.http_only):
            data["aggregate"] = run_aggregate(100_000 if args.quick else args.records)
            data["ops_pages"] = run_ops_pages(200_000 if args.quick else 5_000_000)
            data["request_log"] = run_request_log(200_000 if args.quick else 5_000_000)
            data["notify_soak"] = run_notify_soak(1_000 if args.quick else 10_000)
            data["capacity"] = run_capacity(200_000 if args.quick else 10_000_000)
        data["versions"] = versions()

        fast_port, stream_port, web_port = free_port(), free_port(), free_port()
        sim = [sys.executable, "-m", "inference.simulator", "--host", "127.0.0.1"]
        fast_sim = spawn(
            [*sim, "--port", str(fast_port), "--chunks", "8"],
            env=base_env(),
            log_path=work / "sim-fast.log",
        )
        spawn(
            [
                *sim,
                "--port",
                str(stream_port),
                "--chunks",
                str(STREAM_CHUNKS),
                "--chunk-delay-ms",
                str(STREAM_CHUNK_DELAY_MS),
            ],
            env=base_env(),
            log_path=work / "sim-stream.log",
        )
        fast_url, stream_url = f"http://127.0.0.1:{fast_port}", f"http://127.0.0.1:{stream_port}"
        auth = {"Authorization": "Bearer default-dev-token"}
        wait_http(f"{fast_url}/api/v1/status", headers=auth)
        wait_http(f"{stream_url}/api/v1/status", headers=auth)

        log("migrate, apply_config, apikey_create")
        manage("migrate", "--noinput")
        apply_config(fast_url, stream_url)
        key = manage(
            "apikey_create", "--email", "bench@bench.invalid", "--name", "bench", "--create-user"
        ).strip()

        log("gunicorn (gevent, 2 workers)")
        web = spawn(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "portal.wsgi:application"],
            env=base_env(
                HOST="127.0.0.1",
                PORT=str(web_port),
                WEB_CONCURRENCY="2",
                LOG_LEVEL="WARNING",
                ACCESS_LOG="0" if args.no_access_log else "-",
            ),
            log_path=work / "gunicorn.log",
        )
        web_url = f"http://127.0.0.1:{web_port}"
        wait_http(f"{web_url}/healthz")

        chat = {
            "model": FAST_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        }
        direct_body = {
            "session_id": 1,
            "prompt": "Say hello to the benchmark.",
            "prompt_type": 1,
            "max_tokens": 16,
            "stream": False,
            "timeout": 60,
        }
        log("warm-up")
        # Long enough to wake the machine: on this VM the first ~30 s of load after an idle
        # spell run slower (the same code measured 779 rps cold and 911 warm at 16 connections,
        # and the first of a series of one-at-a-time stream runs ~2x slower than the next).
        wrk(
            web_url,
            "/v1/chat/completions",
            chat,
            connections=16,
            seconds=2 if args.quick else 20,
            keys=[key],
        )
        data["rss_idle"] = {str(p): round(rss_mb(p), 1) for p in children_of(web.pid)}

        data["nonstream"] = {"direct": [], "portal": []}
        nonstream_connections = (
            () if args.streams_only or args.ttft_only else args.connections or (1, 16, 64)
        )
        for connections in nonstream_connections:
            log(f"non-streaming, {connections} connection(s)")
            data["nonstream"]["direct"].append(
                wrk(
                    fast_url,
                    "/api/v1/completions",
                    direct_body,
                    connections=connections,
                    seconds=seconds,
                    keys=["default-dev-token"],
                )
            )
            cpu_before = cpu_seconds(children_of(web.pid))
            rest_before = cpu_of_the_rest(fast_sim.pid)
            figures = wrk(
                web_url,
                "/v1/chat/completions",
                chat,
                connections=connections,
                seconds=seconds,
                keys=[key],
            )
            # CPU the portal's workers spent per request: what caps the rate on an idle machine.
            used = cpu_seconds(children_of(web.pid)) - cpu_before
            figures["worker_cpu_ms_per_request"] = round(
                used * 1000 / max(1, figures["requests"]), 2
            )
            # ... and what the rest of the machine spent per request beside them
            rest_after = cpu_of_the_rest(fast_sim.pid)
            figures["others_cpu_ms_per_request"] = {
                name: round(
                    (rest_after[name] - rest_before[name]) * 1000 / max(1, figures["requests"]), 2
                )
                for name in rest_after
            }
            data["nonstream"]["portal"].append(figures)
            log(f"  direct {data['nonstream']['direct'][-1]}")
            log(f"  portal {data['nonstream']['portal'][-1]}")

        if nonstream_connections:
            log("the stack's ceiling (bench/ceiling.py)")
            data["ceiling"] = ceiling(
                fast_url,
                key,
                chat,
                connections=tuple(c for c in nonstream_connections if c in (1, 16)),
                seconds=seconds,
                work=work,
            )

        if args.profile:
            profile(web.pid, web_url, chat, key, seconds, work / "profile.txt")

        if not (args.nonstream_only or args.streams_only):
            data["ttft_1"] = ttft_one_at_a_time(
                fast_port, web_port, key, chat, direct_body, count=50 if args.quick else None
            )
        if args.nonstream_only or args.ttft_only:
            print(
                json.dumps(
                    {k: data[k] for k in ("nonstream", "ceiling", "ttft_1") if k in data}, indent=2
                )
            )
            return 0

        count = 200 if args.quick else 1000
        ramp = 2.0 if args.quick else 10.0
        stream_chat = {**chat, "model": STREAM_MODEL, "stream": True, "max_tokens": 64}
        stream_direct = {**direct_body, "stream": True, "max_tokens": 64}
        log(f"{count} streams, direct")
        direct_streams = streams(
            stream_port, "/api/v1/completions", auth, stream_direct, count=count, ramp=ramp
        )
        log(f"  {direct_streams}")
        log(f"{count} streams, portal")
        portal_streams = streams(
            web_port,
            "/v1/chat/completions",
            {"Authorization": f"Bearer {key}"},
            stream_chat,
            count=count,
            ramp=ramp,
            sample_rss_of=web.pid,
        )
        log(f"  {portal_streams}")
        # The same streams through Anthropic's face of the same pipeline.
        log(f"{count} streams, portal /v1/messages")
        stream_message = {
            "model": STREAM_MODEL,
            "max_tokens": 64,
            "stream": True,
            "messages": chat["messages"],
        }
        messages_streams = streams(
            web_port,
            "/v1/messages",
            {"x-api-key": key, "anthropic-version": "2023-06-01"},
            stream_message,
            count=count,
            ramp=ramp,
            sample_rss_of=web.pid,
        )
        log(f"  {messages_streams}")
        data["streams"] = {
            "direct": direct_streams,
            "portal": portal_streams,
            "messages": messages_streams,
        }
        if args.streams_only:
            print(json.dumps({"machine": data["machine"], "streams": data["streams"]}, indent=2))
            return 0

        data["keys"] = {}
        for total, sample in ((10, 10), (100_000, 200)):
            log(f"keys: table of {total:,}")
            drawn = bulk_keys(total, sample) if total > 10 else [key, *bulk_keys(10, 9)]
            flush_key_cache()
            # First use of every key drawn (cache miss, indexed lookup, last_used write), then
            # the steady state over the same keys.
            cold = cold_latency(web_url, drawn, chat)
            warm = wrk(
                web_url, "/v1/chat/completions", chat, connections=16, seconds=seconds, keys=drawn
            )
            data["keys"][str(total)] = {"warm": warm, "cold": cold}
            log(f"  warm {warm} cold {cold}")
        data["load"] = {"after": os.getloadavg()}
    finally:
        stop_all()
    data["seconds"] = time.time() - started
    if args.notes and Path(args.notes).exists():
        data.setdefault("notes", []).extend(Path(args.notes).read_text().splitlines())
    command = "make bench" if not args.http_only else "bench/run.py --http-only"
    write_report(Path(args.out), data, command + (" (--quick)" if args.quick else ""))
    print(json.dumps(data, indent=2, default=str))
    log(f"wrote {args.out}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
