"""Staff insights: the daily aggregates Celery builds, the page that reads them (staff only,
a fixed number of queries, never the raw records) and the CSV behind each chart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.services import usage_aggregate
from ops.insights import funnel, insights_build, top_customers
from ops.models import InsightDay, InsightModelDay
from ops.tasks import build_insights
from tests.builders import LLAMA, QWEN, usage_records

pytestmark = pytest.mark.django_db

PAGE = "/staff/insights"


def _chat(client, raw):
    return client.post(
        "/v1/chat/completions",
        json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 2}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )  # fmt: skip


def test_only_staff_see_insights(client, alice, staff):
    assert client.get(PAGE).status_code == 302  # to the admin's login
    assert client.get(f"{PAGE}/requests.csv").status_code == 302
    client.force_login(alice)
    response = client.get(PAGE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(staff)
    assert client.get(PAGE).status_code == 200


def test_the_admin_index_links_to_insights_and_status(client, staff):
    client.force_login(staff)
    html = client.get("/admin/").content.decode()
    assert f'href="{PAGE}"' in html and 'href="/status"' in html


def test_a_day_is_folded_by_model_and_outcome_with_percentiles(alice, alice_key):
    key, _ = alice_key
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for latency in (100, 200, 300, 400):
        usage_records(alice, key, n=1, at=noon, latency_ms=latency, ttfb_ms=latency // 10)
    usage_records(alice, key, n=2, at=noon, model=QWEN, outcome="upstream_error", http_status=502)
    usage_records(alice, key, n=1, at=noon, outcome="timeout", http_status=504)
    usage_records(alice, key, n=3, at=noon - timedelta(days=1))  # another day
    assert insights_build(day=noon.date()) == 2
    llama = InsightModelDay.objects.get(day=noon.date(), model=LLAMA)
    assert (llama.requests, llama.ok, llama.timeouts, llama.total_tokens) == (5, 4, 1, 75)
    assert (llama.latency_p50_ms, llama.latency_p95_ms) == (200, 400)
    assert (llama.ttfb_p50_ms, llama.ttfb_p95_ms) == (20, 40)
    qwen = InsightModelDay.objects.get(day=noon.date(), model=QWEN)
    assert (qwen.requests, qwen.upstream_errors, qwen.latency_p50_ms) == (2, 2, None)
    insights_build(day=noon.date())  # again: the same rows, not twice the counts
    assert InsightModelDay.objects.get(day=noon.date(), model=LLAMA).requests == 5


def test_refusals_are_counted_by_the_limit_that_bound(client, catalog, plan, alice, alice_key):
    plan.requests_per_minute = 1
    plan.save()
    _, raw = alice_key
    assert _chat(client, raw).status_code == 200
    refused = _chat(client, raw)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"  # the caller's code as ever
    assert _chat(client, raw).status_code == 429
    usage_aggregate()
    build_insights()
    today = InsightDay.objects.get(day=timezone.now().date())
    assert today.refusals == {"p_rpm": 2}
    assert (today.active_customers, today.active_keys) == (1, 1)
    # The customer's dashboard shows the public code, not the limit's internal name.
    client.force_login(alice)
    dashboard = client.get("/dashboard").content.decode()
    assert "rate_limit_exceeded" in dashboard and "p_rpm" not in dashboard


def test_the_funnel_follows_each_sign_up_week(make_user, make_key, alice_key, alice):
    now = timezone.now()
    week_start = (now - timedelta(days=now.weekday() + 7)).replace(hour=9)
    cohort = [make_user(f"u{i}@example.com", verified=i < 3) for i in range(4)]
    for user in cohort:
        user.date_joined = week_start
        user.save(update_fields=["date_joined"])
    key, _ = make_key(cohort[0])
    make_key(cohort[1])
    usage_records(cohort[0], key, n=1, at=week_start + timedelta(hours=1))
    usage_records(cohort[0], key, n=1, at=week_start + timedelta(days=8))
    usage_aggregate()
    weeks = {w.week: w for w in funnel()}
    w = weeks[week_start.date()]
    assert (w.signed_up, w.verified, w.first_key, w.first_success, w.active_next_week) == (
        4, 3, 2, 1, 1,
    )  # fmt: skip


def test_top_customers_with_their_plan_and_how_close_they_are(plan, alice, bob, make_key):
    plan.tokens_per_month = 1000
    plan.save()
    a_key, _ = make_key(alice)
    b_key, _ = make_key(bob)
    usage_records(alice, a_key, n=10, prompt=40, completion=10)  # 500 tokens
    usage_records(bob, b_key, n=1)
    usage_aggregate()
    top = top_customers()
    assert [(c.name, c.plan, c.tokens) for c in top] == [
        ("alice", "free", 500), ("bob", "free", 15),
    ]  # fmt: skip
    assert top[0].share == 0.5


def test_page_reads_aggregates_only_in_a_fixed_number_of_queries(client, staff, alice, alice_key):
    key, _ = alice_key
    client.force_login(staff)
    client.get(PAGE)
    with CaptureQueriesContext(connection) as few:
        assert client.get(PAGE).status_code == 200
    for d in range(30):
        usage_records(alice, key, n=3, at=timezone.now() - timedelta(days=d), model=f"m{d % 5}")
    usage_aggregate()
    for d in range(30):
        insights_build(day=(timezone.now() - timedelta(days=d)).date())
    with CaptureQueriesContext(connection) as many:
        response = client.get(PAGE)
    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
    for query in many.captured_queries:
        assert "metering_usagerecord" not in query["sql"].lower()
    html = response.content.decode()
    assert 'data-insight-chart="requests"' in html and "<td>alice</td>" in html


def test_each_chart_has_a_csv(client, staff, alice, alice_key):
    key, _ = alice_key
    usage_records(alice, key, n=2)
    usage_aggregate()
    build_insights()
    client.force_login(staff)
    for name in ("funnel", "top", "activity", "requests", "tokens", "refusals", "errors",
                 "latency", "ttfb"):  # fmt: skip
        response = client.get(f"{PAGE}/{name}.csv")
        assert response.status_code == 200, name
        assert response["Content-Type"].startswith("text/csv")
    lines = client.get(f"{PAGE}/requests.csv").content.decode().splitlines()
    assert lines[0] == "day,series,value"
    assert lines[-1] == f"{timezone.now().date()},{LLAMA},2"
    assert client.get(f"{PAGE}/nonsense.csv").status_code == 404
