#!/usr/bin/env python
"""Benchmark: the request log (/requests) with 5,000,000 usage records, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_log_bench \
        .venv/bin/python bench/request_log.py [--records 5000000]

Creates the database if missing and migrates it; makes 200 organizations with 2 keys each
and fills `--records` usage records over 30 days with `INSERT ... SELECT generate_series`,
a fifth of them the biggest organization's (the customer whose log is read), the rest spread
over the others; 1 % upstream errors (502), 2 % rate limited (429), 8 models. Then it times
/requests through Django's test client as that organization's owner (the whole page: session,
queries, template): the first page, each filter alone (key, model, outcome, status class, a
day, a request id), two combined, and the 20th page of a keyset walk; plus the CSV of one
filtered day. Each figure is the p50 and max of 30 runs; the target is the first page and a
filtered page under 100 ms (p50). It prints the figures and each query's plan (the indexes
PostgreSQL picked) as JSON, refuses a database whose record table has rows, and empties
what it filled afterwards.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
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
os.environ.setdefault("ALLOW_LOCAL_STATE", "1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from aggregate import ensure_database

MODELS = [f"cortensor/bench-model-{i}" for i in range(8)]
ORGS, KEYS_PER_ORG = 200, 2
BIG_SHARE = 5  # one record in 5 is the big organization's
RUNS = 30
TARGET_MS = 100

# g % 5 = 0: the big organization's (its two keys alternate); else one of the other keys.
# Outcomes hang on h = g / 5, so every organization gets its share of each.
RECORDS = """
INSERT INTO metering_usagerecord
    (request_id, org_id, user_id, key_id, model, pool, router_id, endpoint, streamed,
     outcome, http_status, error_code, prompt_tokens, completion_tokens, total_tokens,
     estimated, admitted, latency_ms, ttfb_ms, created_at)
SELECT 'req_logbench' || lpad(g::text, 12, '0'),
       (%(key_orgs)s::bigint[])[k], (%(key_owners)s::bigint[])[k], (%(key_ids)s::bigint[])[k],
       (%(models)s::text[])[1 + (g / 7) %% %(nmodels)s],
       'default', 1, 'chat.completions', g %% 3 = 0,
       CASE WHEN h %% 50 = 1 THEN 'rate_limited' WHEN h %% 100 = 2 THEN 'upstream_error'
            ELSE 'ok' END,
       CASE WHEN h %% 50 = 1 THEN 429 WHEN h %% 100 = 2 THEN 502 ELSE 200 END,
       CASE WHEN h %% 50 = 1 THEN 'rate_limit_exceeded:p_rpm'
            WHEN h %% 100 = 2 THEN 'upstream_error' ELSE '' END,
       g %% 400, g %% 250, g %% 400 + g %% 250, g %% 41 = 0, h %% 50 <> 1, 200 + g %% 900,
       20 + g %% 300,
       now() - make_interval(secs => (%(n)s - g) * (30 * 86400.0) / %(n)s)
FROM (
    SELECT g, g / %(big_share)s AS h,
           CASE WHEN g %% %(big_share)s = 0 THEN 1 + (g / %(big_share)s / 3) %% 2
                ELSE 3 + g %% (%(nkeys)s - 2) END AS k
    FROM generate_series(1, %(n)s) AS g
) AS s
"""
FILLED = "metering_usagerecord, metering_usagepending"
NEXT = re.compile(r'<a href="([^"]+)" rel="next"')
SCANS = re.compile(
    r"Index (?:Only )?Scan(?: Backward)? using \w+|Seq Scan on \w+|Bitmap Index Scan on \w+"
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
            "bench/request_log.py needs DATABASE_URL=postgres://…/portal_log_bench",
            file=sys.stderr,
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
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from accounts.models import Organization, User
    from accounts.selectors import SESSION_ORG
    from apikeys.services import apikey_create
    from catalog.models import CatalogModel, Router, RouterPool
    from metering.models import UsageRecord
    from metering.partitions import usage_partitions_ensure
    from metering.selectors import LogFilters, request_log_queryset

    call_command("migrate", verbosity=0, interactive=False)
    if UsageRecord.objects.exists():
        print("metering_usagerecord is not empty: use a database of its own", file=sys.stderr)
        return 2

    figures: dict[str, object] = {"records": args.records, "models": len(MODELS)}
    pool = RouterPool.objects.create(name="bench-log-pool")
    Router.objects.create(pool=pool, base_url="http://10.9.9.9:5010", session_id=1)
    for m in MODELS:
        CatalogModel.objects.create(public_id=m, pool=pool)
    users = [User.objects.create_user(email=f"log-{i}@bench.invalid") for i in range(ORGS)]
    keys = [apikey_create(owner=u, name=f"k{j}")[0] for u in users for j in range(KEYS_PER_ORG)]
    big_org = keys[0].org_id
    # The records span the last 30 days: give both months their partitions first, as the
    # daily beat task has in production (a fresh database has only this month's onward, and
    # last month's records would all sit in the default partition).
    usage_partitions_ensure(now=timezone.now() - timezone.timedelta(days=31), months_ahead=2)
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                RECORDS,
                {
                    "key_orgs": [k.org_id for k in keys],
                    "key_owners": [k.owner_id for k in keys],
                    "key_ids": [k.pk for k in keys],
                    "nkeys": len(keys),
                    "models": MODELS,
                    "nmodels": len(MODELS),
                    "big_share": BIG_SHARE,
                    "n": args.records,
                },
            )
            cursor.execute("ANALYZE metering_usagerecord")
        figures["fill_seconds"] = round(time.perf_counter() - started, 1)
        figures["big_org_records"] = UsageRecord.objects.filter(org_id=big_org).count()

        owner = User.objects.get(pk=keys[0].owner_id)
        client = Client(secure=True)
        client.force_login(owner)
        session = client.session
        session[SESSION_ORG] = big_org
        session.save()
        day = (timezone.now() - timezone.timedelta(days=10)).date().isoformat()
        sample = (
            UsageRecord.objects.filter(org_id=big_org, outcome="upstream_error")
            .order_by("id")
            .values_list("request_id", flat=True)[10]
        )
        pages = {
            "first_page": {},
            "by_key": {"key": keys[1].pk},
            "by_model": {"model": MODELS[3]},
            "by_outcome_upstream_error": {"outcome": "upstream_error"},
            "by_status_5xx": {"status": "5xx"},
            "by_status_4xx": {"status": "4xx"},
            "one_day": {"from": day, "to": day},
            "request_id_search": {"q": sample},
            "key_and_status_5xx": {"key": keys[1].pk, "status": "5xx"},
            "model_and_day": {"model": MODELS[5], "from": day, "to": day},
        }
        for name, params in pages.items():

            def page(params=params, name=name):
                response = client.get("/requests", params)
                assert response.status_code == 200, response.status_code
                assert b'id="request-log"' in response.content, name  # rows were found

            page()  # warm
            figures[name] = timed(page)

        # The 20th page of a keyset walk of the whole log (each page one request).
        url = "/requests"
        for _ in range(19):
            found = NEXT.search(client.get(url).content.decode())
            assert found, "no next page"
            url = "/requests" + html.unescape(found.group(1))

        def deep():
            assert client.get(url).status_code == 200

        figures["page_20"] = timed(deep)

        def export():
            response = client.get("/requests/export.csv", {"from": day, "to": day, "status": "5xx"})
            rows = sum(chunk.count(b"\n") for chunk in response.streaming_content)
            assert rows > 1

        figures["csv_one_day_5xx"] = timed(export, runs=5)

        plans = {}
        for name, params in pages.items():
            filters, _ = LogFilters.parse({k: str(v) for k, v in params.items()})
            query = request_log_queryset(org_id=big_org, filters=filters)[:51]
            plan = query.explain()
            plans[name] = sorted(set(SCANS.findall(plan)))
        figures["plans"] = plans
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {FILLED}")
        Organization.objects.filter(memberships__user__email__endswith="@bench.invalid").delete()
        User.objects.filter(email__endswith="@bench.invalid").delete()
        CatalogModel.objects.filter(pool=pool).delete()
        pool.delete()
    print(json.dumps(figures, indent=2))
    slowest = max(v["p50_ms"] for k, v in figures.items() if isinstance(v, dict) and k in pages)
    return 0 if slowest < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
