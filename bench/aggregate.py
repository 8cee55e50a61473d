#!/usr/bin/env python
"""Benchmark: fold 1,000,000 usage records into the daily ledgers on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/aggregate.py

Creates the database if it does not exist and migrates it, inserts the records with one
`INSERT ... SELECT generate_series` (30 days, 20 keys of 10 users, 4 models, mixed outcomes),
times `usage_aggregate()` (target <= 30 s) and a second run with nothing new (target well
under 1 s), checks the ledgers add up, prints the figures as JSON on stdout, and truncates
the usage tables and removes its users afterwards. It refuses to run on a database whose
record table already has rows: use a database of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
os.environ.setdefault("LOG_LEVEL", "WARNING")

USERS, KEYS_PER_USER = 10, 2
MODELS = (
    "cortensor/llama-3.1-8b",
    "cortensor/qwen-2.5-7b",
    "cortensor/mistral-7b",
    "cortensor/phi-3-mini",
)

INSERT = """
INSERT INTO metering_usagerecord
    (request_id, org_id, user_id, key_id, model, pool, router_id, endpoint, streamed, outcome,
     http_status, error_code, prompt_tokens, completion_tokens, total_tokens,
     estimated, admitted, latency_ms, ttfb_ms, created_at)
SELECT 'bench-' || g,
       (%(key_orgs)s::bigint[])[1 + g %% %(nkeys)s],
       (%(key_owners)s::bigint[])[1 + g %% %(nkeys)s],
       (%(key_ids)s::bigint[])[1 + g %% %(nkeys)s],
       (%(models)s::text[])[1 + (g / 7) %% %(nmodels)s],
       'default', 1, 'chat.completions', g %% 3 = 0,
       CASE WHEN g %% 50 = 0 THEN 'rate_limited' WHEN g %% 97 = 0 THEN 'upstream_error'
            ELSE 'ok' END,
       CASE WHEN g %% 50 = 0 THEN 429 WHEN g %% 97 = 0 THEN 502 ELSE 200 END,
       '', g %% 400, g %% 250, g %% 400 + g %% 250, false, g %% 50 <> 0, 200 + g %% 900, 50,
       now() - make_interval(secs => (g %% (30 * 86400))::double precision)
FROM generate_series(1, %(n)s) AS g
"""


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(
            "bench/aggregate.py needs DATABASE_URL=postgres://…/<a database of its own>",
            file=sys.stderr,
        )
        return 2
    ensure_database(url)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from apikeys.services import apikey_create
    from metering.models import UsageRecord
    from metering.services import usage_aggregate

    call_command("migrate", verbosity=0, interactive=False)
    if UsageRecord.objects.exists():
        print(
            "metering_usagerecord is not empty: run the benchmark on a database of its own",
            file=sys.stderr,
        )
        return 2

    users = [User.objects.create_user(email=f"bench-{i}@bench.invalid") for i in range(USERS)]
    keys = [
        apikey_create(owner=u, name=f"bench {j}")[0] for u in users for j in range(KEYS_PER_USER)
    ]
    figures: dict[str, object] = {"records": args.records, "keys": len(keys), "models": len(MODELS)}
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                INSERT,
                {
                    "key_orgs": [k.org_id for k in keys],
                    "key_owners": [k.owner_id for k in keys],
                    "key_ids": [k.pk for k in keys],
                    "nkeys": len(keys),
                    "models": list(MODELS),
                    "nmodels": len(MODELS),
                    "n": args.records,
                },
            )
            cursor.execute("ANALYZE metering_usagerecord")
        figures["insert_seconds"] = round(time.perf_counter() - started, 2)

        started = time.perf_counter()
        folded = usage_aggregate()
        figures["aggregate_seconds"] = round(time.perf_counter() - started, 2)
        figures["aggregate_records"] = folded

        started = time.perf_counter()
        again = usage_aggregate()
        figures["second_run_seconds"] = round(time.perf_counter() - started, 4)
        figures["second_run_records"] = again

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), sum(requests), sum(total_tokens) FROM metering_dailyusage"
            )
            ledgers, requests, tokens = cursor.fetchone()
            cursor.execute("SELECT sum(total_tokens) FROM metering_usagerecord")
            (record_tokens,) = cursor.fetchone()
        figures["ledger_rows"] = ledgers
        figures["ledgers_match_records"] = (
            requests == args.records
            and tokens == record_tokens
            and folded == args.records
            and again == 0
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE metering_usagerecord, metering_dailyusage")
        for user in users:
            user.delete()
    print(json.dumps(figures))
    ok = (
        figures.get("ledgers_match_records")
        and figures["aggregate_seconds"] <= 30
        and figures["second_run_seconds"] < 1
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
