#!/usr/bin/env python
"""Benchmark: the status page with a year of history and the staff insights page with
5,000,000 usage records, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_ops_bench \
        .venv/bin/python bench/ops_pages.py [--records 5000000]

Creates the database if missing and migrates it; fills it with `INSERT ... SELECT
generate_series`: 8 models, a year of 5-minute health rows per model (841,000 rows), a year of
model days, 50 incidents; 200 customers with 2 keys each and `--records` usage records over 30
days, folded into the ledgers by `usage_aggregate` and into the insights aggregates by
`insights_build` for each day (both timed: they are Celery's work). Then it times `/status`,
`/status.json` (cache emptied before each request: the uncached cost) and `/staff/insights`
through Django's test client, and prints the figures as JSON. Targets: status under 50 ms,
insights under 300 ms (p50). It refuses a database whose record table has rows, and empties
what it filled afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
os.environ.setdefault("STAFF_REQUIRE_MFA", "0")
os.environ.setdefault("ALLOW_LOCAL_STATE", "1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from aggregate import ensure_database

MODELS = [f"cortensor/bench-model-{i}" for i in range(8)]
CUSTOMERS, KEYS_PER_CUSTOMER = 200, 2
RUNS = 30

HEALTH = """
INSERT INTO ops_modelhealth
    (model, bucket, state, requests, upstream_errors, timeouts, ttfb_p50_ms, routers,
     routers_up, updated_at)
SELECT m, b,
       CASE WHEN (extract(epoch FROM b)::bigint / 300) %% 997 = 0 THEN 'down'
            WHEN (extract(epoch FROM b)::bigint / 300) %% 101 = 0 THEN 'degraded'
            ELSE 'operational' END,
       100, 1, 0, 150, 2, 2, b
FROM unnest(%(models)s::text[]) AS m,
     generate_series(date_trunc('hour', now()) - interval '365 days', now(), interval '5 minutes')
         AS b
"""
DAYS = """
INSERT INTO ops_modelday (model, day, buckets, degraded, down)
SELECT model, (bucket AT TIME ZONE 'UTC')::date, count(*),
       count(*) FILTER (WHERE state = 'degraded'), count(*) FILTER (WHERE state = 'down')
FROM ops_modelhealth GROUP BY 1, 2
"""
RECORDS = """
INSERT INTO metering_usagerecord
    (request_id, user_id, key_id, model, pool, router_id, endpoint, streamed, outcome,
     http_status, error_code, prompt_tokens, completion_tokens, total_tokens,
     estimated, admitted, latency_ms, ttfb_ms, created_at)
SELECT 'opsbench-' || g,
       (%(key_owners)s::bigint[])[1 + g %% %(nkeys)s],
       (%(key_ids)s::bigint[])[1 + g %% %(nkeys)s],
       (%(models)s::text[])[1 + (g / 7) %% %(nmodels)s],
       'default', 1, 'chat.completions', g %% 3 = 0,
       CASE WHEN g %% 50 = 0 THEN 'rate_limited' WHEN g %% 97 = 0 THEN 'upstream_error'
            WHEN g %% 89 = 0 THEN 'timeout' ELSE 'ok' END,
       CASE WHEN g %% 50 = 0 THEN 429 WHEN g %% 97 = 0 THEN 502 WHEN g %% 89 = 0 THEN 504
            ELSE 200 END,
       CASE WHEN g %% 50 = 0 THEN 'rate_limit_exceeded:p_rpm' ELSE '' END,
       g %% 400, g %% 250, g %% 400 + g %% 250, false, g %% 50 <> 0, 200 + g %% 900,
       20 + g %% 300,
       now() - make_interval(secs => (g %% (30 * 86400))::double precision)
FROM generate_series(1, %(n)s) AS g
"""
FILLED = (
    "metering_usagerecord, metering_usagepending, metering_dailyusage, ops_modelhealth, "
    "ops_modelday, ops_insightmodelday, ops_insightday, ops_incidentupdate, "
    "ops_incident_affected_models, ops_incident"
)


def timed(fn, runs: int = RUNS) -> dict:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--records", type=int, default=5_000_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(
            "bench/ops_pages.py needs DATABASE_URL=postgres://…/portal_ops_bench", file=sys.stderr
        )
        return 2
    ensure_database(url)

    import django

    django.setup()
    from django.test.utils import override_settings

    # Plain static URLs: the production manifest exists only after collectstatic.
    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from accounts.models import User
    from apikeys.services import apikey_create
    from catalog.models import CatalogModel, Router, RouterPool
    from metering.models import UsageRecord
    from metering.services import usage_aggregate
    from ops.insights import insights_build
    from ops.models import Incident, IncidentUpdate

    call_command("migrate", verbosity=0, interactive=False)
    if UsageRecord.objects.exists():
        print("metering_usagerecord is not empty: use a database of its own", file=sys.stderr)
        return 2

    figures: dict[str, object] = {"records": args.records, "models": len(MODELS)}
    pool = RouterPool.objects.create(name="bench-pool")
    Router.objects.create(pool=pool, base_url="http://10.9.9.9:5010", session_id=1)
    for m in MODELS:
        CatalogModel.objects.create(public_id=m, pool=pool)
    staff = User.objects.create_user(email="bench-staff@bench.invalid", is_staff=True)
    users = [User.objects.create_user(email=f"bench-{i}@bench.invalid") for i in range(CUSTOMERS)]
    keys = [
        apikey_create(owner=u, name=f"k{j}")[0] for u in users for j in range(KEYS_PER_CUSTOMER)
    ]
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(HEALTH, {"models": MODELS})
            cursor.execute(DAYS)
            cursor.execute("SELECT count(*) FROM ops_modelhealth")
            figures["health_rows"] = cursor.fetchone()[0]
        now = timezone.now()
        for i in range(50):
            at = now - timezone.timedelta(days=7 * i + 1)
            incident = Incident.objects.create(
                title=f"Incident {i}", started_at=at, status="resolved", resolved_at=at
            )
            incident.affected_models.set(CatalogModel.objects.filter(public_id=MODELS[i % 8]))
            IncidentUpdate.objects.create(
                incident=incident, status="resolved", message="Fixed.", created_at=at
            )
        with connection.cursor() as cursor:
            cursor.execute(
                RECORDS,
                {
                    "key_owners": [k.owner_id for k in keys],
                    "key_ids": [k.pk for k in keys],
                    "nkeys": len(keys),
                    "models": MODELS,
                    "nmodels": len(MODELS),
                    "n": args.records,
                },
            )
            cursor.execute("ANALYZE")
        figures["fill_seconds"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        usage_aggregate()
        figures["usage_aggregate_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        today = now.date()
        for d in range(31):
            insights_build(day=today - timezone.timedelta(days=d))
        figures["insights_build_31_days_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        insights_build(day=today - timezone.timedelta(days=1))
        figures["insights_build_one_day_seconds"] = round(time.perf_counter() - started, 2)

        client = Client(secure=True)

        def status():
            cache.clear()
            response = client.get("/status")
            assert response.status_code == 200, (response.status_code, dict(response.items()))

        def status_json():
            cache.clear()
            assert client.get("/status.json").status_code == 200

        staff_client = Client(secure=True)
        staff_client.force_login(staff)

        def insights():
            response = staff_client.get("/staff/insights")
            assert response.status_code == 200, response.status_code

        for fn in (status, insights):
            fn()  # warm: templates, connections
        from ops.selectors import status_overview

        figures["status_overview_query"] = timed(status_overview)
        figures["status_page"] = timed(status)
        figures["status_json"] = timed(status_json)
        figures["insights_page"] = timed(insights, runs=15)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {FILLED}")
        User.objects.filter(email__endswith="@bench.invalid").delete()
        CatalogModel.objects.filter(pool=pool).delete()
        pool.delete()
    print(json.dumps(figures, indent=2))
    ok = figures["status_page"]["p50_ms"] < 50 and figures["insights_page"]["p50_ms"] < 300
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
