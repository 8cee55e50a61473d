#!/usr/bin/env python
"""The capacity model's figures (docs/scaling.md), measured on this machine.

    .venv/bin/python bench/capacity.py [--part served|db|all] [--requests 2000]
                                       [--records 10000000] [--writer-records 50000]

`served`: the portal as production runs it (gunicorn, one gevent worker, the batched writer)
on a database of its own and a Redis server of its own (started here, so that its counters
count only this), in front of the router simulator. After a warm-up it sends `--requests`
chat completions from 8 connections and reads, per request: the worker's CPU ms (/proc),
Redis commands by name and bytes in and out (INFO commandstats / stats, reset before), and
PostgreSQL rows inserted and bytes added to the usage tables (pg_stat_user_tables,
pg_total_relation_size) plus the WAL written (cluster-wide: an upper bound on a shared
server).

`db`: the batch writer's sustained records/s with its batched INSERT and with COPY into a
staging table + INSERT ... SELECT ... ON CONFLICT DO NOTHING (COPY cannot skip conflicts
itself); `--records` usage records over 120 days seeded with generate_series into the
partitioned table, their bytes per record, and `usage_aggregate` over all of them; then one
month deleted with DELETE (and the VACUUM it leaves) against another month dropped as a
partition.

Databases: CAPACITY_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/portal_capacity),
dropped and re-created; `served` uses it with the suffix `_served`. Prints JSON on stdout.
About 2 minutes for `served`; `db` at 10,000,000 records about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get(
    "CAPACITY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_capacity"
)
MODEL = "bench/fast"
USAGE_TABLES = "relname LIKE 'metering_usage%%' OR relname = 'metering_dailyusage'"

_children: list[subprocess.Popen] = []


def log(message: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
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


def wait_until(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


# --- served: what one request costs ------------------------------------------------------------


def _env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PROMETHEUS_MULTIPROC_DIR"}}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY="capacity-bench-secret-key",
        APIKEY_HASH_SECRET="capacity-bench-hash-secret",
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        CACHE_KEY_PREFIX="portal-capacity",
        ENV_FILE="",
    )
    env.update(extra)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stderr}")
    return result.stdout


def _requests(port: int, key: str, count: int, connections: int) -> list[int]:
    body = json.dumps(
        {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    statuses: list[int] = []
    lock = threading.Lock()
    remaining = [count]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            with lock:
                statuses.append(answer.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _pg_usage_stats(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        ins, upd, dele = conn.execute(
            "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), "  # noqa: S608
            f"coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables WHERE {USAGE_TABLES}"
        ).fetchone()
        size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "  # noqa: S608
            f"FROM pg_stat_user_tables WHERE {USAGE_TABLES}"
        ).fetchone()[0]
        records = conn.execute("SELECT count(*) FROM metering_usagerecord").fetchone()[0]
        wal = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
    return {
        "inserted": int(ins),
        "updated": int(upd),
        "deleted": int(dele),
        "bytes": int(size),
        "records": int(records),
        "wal": int(wal),
    }


def _redis_stats(client) -> dict:
    commands = {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in client.info("commandstats").items()
    }
    stats = client.info("stats")
    cpu = client.info("cpu")
    return {
        "commands": commands,
        "in": stats["total_net_input_bytes"],
        "out": stats["total_net_output_bytes"],
        "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
    }


def served(requests: int) -> dict:
    import redis

    work = Path(tempfile.mkdtemp(prefix="portal-capacity-"))
    database_url = DATABASE_URL + "_served"
    fresh_database(database_url)
    redis_port, sim_port, web_port = free_port(), free_port(), free_port()
    spawn(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        os.environ.copy(),
        work / "redis.log",
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    client = redis.Redis.from_url(redis_url)
    wait_until(client.ping, "redis-server")
    env = _env(database_url, redis_url)
    spawn(
        [
            sys.executable,
            "-m",
            "inference.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(sim_port),
            "--chunks",
            "8",
        ],
        env,
        work / "sim.log",
    )
    log("migrate, apply_config, apikey_create")
    _manage(env, "migrate", "--noinput")
    config = {
        "plans": [
            {
                "name": "capacity",
                "requests_per_minute": 10_000_000,
                "tokens_per_minute": 1_000_000_000,
                "requests_per_day": 100_000_000,
                "tokens_per_day": 10_000_000_000,
                "max_concurrent_requests": 10_000,
                "models": ["*"],
                "default": True,
            }
        ],
        "pools": [
            {
                "name": "fast",
                "routers": [
                    {
                        "url": f"http://127.0.0.1:{sim_port}",
                        "api_version": "v1",
                        "session_id": 1,
                        "token": "default-dev-token",
                    }
                ],
            }
        ],
        "models": [
            {
                "id": MODEL,
                "pool": "fast",
                "chat_template": "llama3",
                "max_tokens": 64,
                "context_length": 4096,
            }
        ],
    }
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    _manage(env, "apply_config", str(config_path))
    key = _manage(
        env, "apikey_create", "--email", "capacity@bench.invalid", "--name", "c", "--create-user"
    ).strip()
    log("gunicorn, one gevent worker")
    web = spawn(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "portal.wsgi:application"],
        _env(database_url, redis_url, HOST="127.0.0.1", PORT=str(web_port), WEB_CONCURRENCY="1"),
        work / "gunicorn.log",
    )

    def healthy() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", web_port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200

    wait_until(healthy, "gunicorn")
    workers = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(web.pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    warm = 300
    _requests(web_port, key, warm, 8)
    wait_until(lambda: _pg_usage_stats(database_url)["records"] >= warm, "warm-up records")
    client.config_resetstat()
    redis_cpu_before = _redis_stats(client)["cpu"]
    pg_before = _pg_usage_stats(database_url)
    cpu_before = cpu_seconds(workers)
    started = time.perf_counter()
    statuses = _requests(web_port, key, requests, 8)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(workers)
    redis_after = _redis_stats(client)
    wait_until(lambda: _pg_usage_stats(database_url)["records"] >= warm + requests, "records", 60)
    # Statistics reach pg_stat_user_tables within a second or so of a transaction's end.
    wait_until(
        lambda: _pg_usage_stats(database_url)["inserted"] - pg_before["inserted"] >= requests,
        "table statistics",
        30,
    )
    pg_after = _pg_usage_stats(database_url)
    n = requests
    per_command = {
        name: round(calls / n, 2)
        for name, calls in sorted(redis_after["commands"].items(), key=lambda kv: -kv[1])
        if calls / n >= 0.01 and name != "info"
    }
    figures = {
        "requests": n,
        "non_200": sum(1 for s in statuses if s != 200),
        "rps_one_worker_8_connections": round(n / elapsed, 1),
        "worker_cpu_ms_per_request": round((cpu_after - cpu_before) * 1000 / n, 2),
        "redis_cpu_ms_per_request": round((redis_after["cpu"] - redis_cpu_before) * 1000 / n, 3),
        # Every command counts, those a Lua script runs included; EVALSHA is one round trip.
        "redis_commands_per_request": round(
            sum(v for k, v in redis_after["commands"].items() if k != "info") / n, 2
        ),
        "redis_commands_by_name": per_command,
        "redis_bytes_in_per_request": round(redis_after["in"] / n),
        "redis_bytes_out_per_request": round(redis_after["out"] / n),
        "pg_rows_inserted_per_request": round(
            (pg_after["inserted"] - pg_before["inserted"]) / n, 2
        ),
        "pg_rows_updated_per_request": round((pg_after["updated"] - pg_before["updated"]) / n, 2),
        "pg_usage_bytes_per_request": round((pg_after["bytes"] - pg_before["bytes"]) / n),
        "pg_wal_bytes_per_request_upper_bound": round((pg_after["wal"] - pg_before["wal"]) / n),
    }
    stop_all()
    _children.clear()
    shutil.rmtree(work, ignore_errors=True)
    return figures


# --- db: writer, aggregation, retention --------------------------------------------------------

SEED = """
INSERT INTO metering_usagerecord
    (request_id, org_id, user_id, key_id, model, pool, router_id, endpoint, streamed, outcome,
     http_status, error_code, prompt_tokens, completion_tokens, total_tokens,
     estimated, admitted, latency_ms, ttfb_ms, created_at)
SELECT 'cap-' || g,
       (%(key_orgs)s::bigint[])[1 + g %% %(nkeys)s],
       (%(key_owners)s::bigint[])[1 + g %% %(nkeys)s],
       (%(key_ids)s::bigint[])[1 + g %% %(nkeys)s],
       (%(models)s::text[])[1 + (g / 7) %% 4],
       'default', 1, 'chat.completions', g %% 3 = 0,
       CASE WHEN g %% 50 = 0 THEN 'rate_limited' ELSE 'ok' END,
       CASE WHEN g %% 50 = 0 THEN 429 ELSE 200 END,
       '', g %% 400, g %% 250, g %% 400 + g %% 250, false, g %% 50 <> 0, 200 + g %% 900, 50,
       %(now)s - make_interval(secs => g::double precision * %(days)s * 86400 / %(n)s)
FROM generate_series(%(first)s, %(last)s) AS g
"""
MODELS = ["cortensor/llama-3.1-8b", "cortensor/qwen-2.5-7b", "cortensor/mistral-7b", "m4"]
SEED_DAYS = 120


def _rows(keys, count: int, now: datetime) -> list[dict]:
    return [
        {
            "request_id": uuid.uuid4().hex,
            "org_id": keys[i % len(keys)].org_id,
            "user_id": keys[i % len(keys)].owner_id,
            "key_id": keys[i % len(keys)].pk,
            "model": MODELS[i % 4],
            "pool": "default",
            "router_id": 1,
            "endpoint": "chat.completions",
            "streamed": False,
            "outcome": "ok",
            "http_status": 200,
            "error_code": "",
            "prompt_tokens": 20,
            "completion_tokens": 16,
            "total_tokens": 36,
            "estimated": False,
            "admitted": True,
            "latency_ms": 120,
            "ttfb_ms": 40,
            "created_at": now,
            "end_user": None,
        }
        for i in range(count)
    ]


def _copy_insert(rows: list[dict]) -> int:
    """COPY into a temporary staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING:
    COPY itself cannot skip a conflict, and one replayed record would fail the whole batch."""
    from django.db import connection, transaction

    columns = list(rows[0])
    names = ", ".join(columns)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS usage_stage "
            "(LIKE metering_usagerecord INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy(f"COPY usage_stage ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        cursor.execute(
            f"INSERT INTO metering_usagerecord ({names}) SELECT {names} FROM usage_stage "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )
        return cursor.rowcount


def _writer_rate(write, keys, total: int, batch: int) -> float:
    from django.utils import timezone

    started = time.perf_counter()
    for _ in range(total // batch):
        write(_rows(keys, batch, timezone.now()))
    return round(total / (time.perf_counter() - started))


def db(records: int, writer_records: int, *, reuse_seed: bool = False) -> dict:
    if not reuse_seed:
        fresh_database(DATABASE_URL)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=DATABASE_URL,
        SECRET_KEY="capacity-bench-secret-key",
        LOG_LEVEL="WARNING",
        ALLOW_LOCAL_STATE="1",
        ENV_FILE="",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User
    from apikeys.services import apikey_create
    from metering.models import UsageRecord
    from metering.partitions import Month, usage_partitions_ensure
    from metering.recording import records_insert
    from metering.services import usage_aggregate

    call_command("migrate", verbosity=0, interactive=False)
    users = [User.objects.get_or_create(email=f"cap-{i}@bench.invalid")[0] for i in range(10)]
    keys = [apikey_create(owner=u, name=f"k{j}")[0] for u in users for j in range(2)]
    figures: dict = {}

    log(f"batch writer: {writer_records:,} records in batches of 500, three ways")
    figures["writer_records_per_s"] = {
        "records_insert (the writer: bounded id look-up, COPY, INSERT ... RETURNING)": _writer_rate(
            lambda rows: records_insert(rows, source="writer"), keys, writer_records, 500
        ),
        "multi-row INSERT ON CONFLICT only (bulk_create ignore_conflicts)": _writer_rate(
            lambda rows: UsageRecord.objects.bulk_create(
                [UsageRecord(**row) for row in rows], ignore_conflicts=True
            ),
            keys,
            writer_records,
            500,
        ),
        "COPY to staging + INSERT SELECT ON CONFLICT": _writer_rate(
            _copy_insert, keys, writer_records, 500
        ),
    }
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM metering_usagerecord WHERE request_id NOT LIKE 'cap-%%'")
        cursor.execute("SELECT count(*), max(created_at) FROM metering_usagerecord")
        seeded, newest = cursor.fetchone()
    if reuse_seed and seeded != records:
        raise SystemExit(
            f"--reuse-seed: the table holds {seeded:,} seeded records, not {records:,}"
        )
    if reuse_seed:
        # The previous run's records, all pending again and no ledger: aggregation from zero.
        log(f"reusing the {records:,} seeded records: all pending again, ledgers emptied")
        now = newest
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE metering_usagepending, metering_dailyusage")
            cursor.execute("INSERT INTO metering_usagepending SELECT id FROM metering_usagerecord")
            cursor.execute("VACUUM ANALYZE metering_usagepending")
    else:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE metering_usagerecord, metering_usagepending")
        now = timezone.now()
        usage_partitions_ensure(now=now - timedelta(days=SEED_DAYS), months_ahead=6)
        log(f"seeding {records:,} records over {SEED_DAYS} days (generate_series)")
    started = time.perf_counter()
    step = 1_000_000
    with connection.cursor() as cursor:
        for first in range(1, 0 if reuse_seed else records + 1, step):
            cursor.execute(
                SEED,
                {
                    "key_orgs": [k.org_id for k in keys],
                    "key_owners": [k.owner_id for k in keys],
                    "key_ids": [k.pk for k in keys],
                    "nkeys": len(keys),
                    "models": MODELS,
                    "now": now,
                    "days": SEED_DAYS,
                    "first": first,
                    "n": records,
                    "last": min(records, first + step - 1),
                },
            )
        cursor.execute("ANALYZE metering_usagerecord")
        figures["seed_records"] = records
        if not reuse_seed:
            figures["seed_seconds"] = round(time.perf_counter() - started, 1)
        cursor.execute(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'metering_usagerecord'::regclass"
        )
        figures["bytes_per_record_with_indexes"] = round(cursor.fetchone()[0] / records)
        cursor.execute("SELECT pg_total_relation_size('metering_usagepending')")
        figures["pending_bytes_per_record"] = round(cursor.fetchone()[0] / records)

    log("usage_aggregate over all of them")
    started = time.perf_counter()
    folded = usage_aggregate()
    seconds = time.perf_counter() - started
    figures["aggregate"] = {
        "records": folded,
        "seconds": round(seconds, 1),
        "records_per_s": round(folded / seconds),
    }

    # Two whole months well inside the seeded span: one deleted, one dropped.
    deleted_month = Month.of(now).plus(-3)
    dropped_month = Month.of(now).plus(-2)
    with connection.cursor() as cursor:
        log(f"DELETE {deleted_month.name} (one statement) and its VACUUM")
        started = time.perf_counter()
        cursor.execute(
            "DELETE FROM metering_usagerecord WHERE created_at >= %s AND created_at < %s",
            [deleted_month.start, deleted_month.plus(1).start],
        )
        deleted = cursor.rowcount
        delete_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cursor.execute(f"VACUUM {deleted_month.name}")
        vacuum_seconds = time.perf_counter() - started
        log(f"DROP {dropped_month.name}")
        cursor.execute(f"SELECT count(*) FROM {dropped_month.name}")  # noqa: S608
        (dropped,) = cursor.fetchone()
        started = time.perf_counter()
        cursor.execute(f"DROP TABLE {dropped_month.name}")
        drop_seconds = time.perf_counter() - started
    figures["retention_one_month"] = {
        "delete_rows": deleted,
        "delete_seconds": round(delete_seconds, 2),
        "vacuum_after_delete_seconds": round(vacuum_seconds, 2),
        "drop_partition_rows": dropped,
        "drop_partition_seconds": round(drop_seconds, 4),
    }
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE metering_usagerecord, metering_usagepending, metering_dailyusage")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description="The capacity model's figures.")
    parser.add_argument("--part", choices=["served", "db", "all"], default="all")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--writer-records", type=int, default=50_000)
    parser.add_argument(
        "--reuse-seed",
        action="store_true",
        help="db: keep the records an earlier run seeded (same --records), re-aggregate them",
    )
    args = parser.parse_args()
    # A stopped benchmark stops what it started (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures: dict = {
        "machine": {"nproc": os.cpu_count(), "load_before": os.getloadavg()},
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        if args.part in ("served", "all"):
            figures["served"] = served(args.requests)
        if args.part in ("db", "all"):
            figures["db"] = db(args.records, args.writer_records, reuse_seed=args.reuse_seed)
    finally:
        stop_all()
    figures["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
