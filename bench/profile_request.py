#!/usr/bin/env python
"""Where one non-streaming request's time goes: N requests through Django's test client in
this process (no gevent, so waits on PostgreSQL, Redis and the router count as wall time),
under cProfile, on the benchmark's database and Redis (run `make bench` once first).

    .venv/bin/python bench/profile_request.py [--requests 300] [--sort cumulative|tottime]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--lines", type=int, default=45)
    args = parser.parse_args()
    os.environ.update(bench.base_env())
    port = bench.free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "inference.simulator", "--port", str(port), "--chunks", "8"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        bench.wait_http(
            f"{url}/api/v1/status", headers={"Authorization": "Bearer default-dev-token"}
        )
        bench.apply_config(url, url)
        key = bench.manage(
            "apikey_create", "--email", "profile@bench.invalid", "--name", "p", "--create-user"
        ).strip()
        import django

        django.setup()
        from django.test import Client

        client = Client()
        body = json.dumps(
            {
                "model": bench.FAST_MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "Say hello."}],
            }
        )

        def one():
            response = client.post(
                "/v1/chat/completions",
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {key}",
            )
            assert response.status_code == 200, response.content

        for _ in range(20):
            one()
        started = time.perf_counter()
        for _ in range(args.requests):
            one()
        plain = (time.perf_counter() - started) / args.requests * 1000
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            one()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.lines)
        print(f"{plain:.2f} ms per request without the profiler\n")
        print(out.getvalue())
    finally:
        sim.terminate()
        sim.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
