"""The usage admin: read-only, and never a full COUNT(*) or LIKE scan on the record table."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.models import DailyUsage, UsageRecord
from metering.services import usage_aggregate


@pytest.fixture
def records(alice, alice_key):
    key, _ = alice_key
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                request_id=f"req-{i:04d}-{uuid.uuid4().hex[:8]}",
                user_id=alice.pk,
                key_id=key.pk,
                model="cortensor/llama-3.1-8b",
                endpoint="chat.completions",
                outcome="ok",
                http_status=200,
                prompt_tokens=1,
                completion_tokens=2,
                total_tokens=3,
                created_at=now - timedelta(days=i % 3),
            )
            for i in range(130)
        ]
    )
    usage_aggregate()
    return list(UsageRecord.objects.order_by("id"))


def _record_table_queries(ctx):
    return [q["sql"] for q in ctx.captured_queries if "metering_usagerecord" in q["sql"]]


def test_record_changelist_never_counts_the_whole_table(admin_client_staff, records):
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client_staff.get("/admin/metering/usagerecord/")
    assert response.status_code == 200
    assert records[-1].request_id in response.content.decode()
    sqls = _record_table_queries(ctx)
    counts = [sql for sql in sqls if "COUNT(" in sql.upper()]
    assert counts, "the paginator counts something"
    assert all("LIMIT" in sql.upper() for sql in counts), counts


def test_record_search_is_an_exact_request_id_lookup(admin_client_staff, records):
    wanted = records[7].request_id
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client_staff.get("/admin/metering/usagerecord/", {"q": wanted})
    assert response.status_code == 200
    html = response.content.decode()
    assert wanted in html and records[8].request_id not in html
    assert not any("LIKE" in sql.upper() for sql in _record_table_queries(ctx))
    # A prefix is not a match: exact only.
    response = admin_client_staff.get("/admin/metering/usagerecord/", {"q": wanted[:8]})
    assert wanted not in response.content.decode()


def test_record_detail_is_read_only(admin_client_staff, records):
    url = f"/admin/metering/usagerecord/{records[0].pk}/change/"
    response = admin_client_staff.get(url)
    assert response.status_code == 200
    assert records[0].request_id in response.content.decode()
    assert b'name="_save"' not in response.content
    assert admin_client_staff.get("/admin/metering/usagerecord/add/").status_code == 403
    response = admin_client_staff.post(url, {"request_id": "changed"})
    assert response.status_code == 403
    assert UsageRecord.objects.filter(request_id=records[0].request_id).exists()


def test_daily_usage_changelist_filters_and_exports_csv(
    admin_client_staff, alice, alice_key, records
):
    response = admin_client_staff.get(
        "/admin/metering/dailyusage/", {"model": "cortensor/llama-3.1-8b"}
    )
    assert response.status_code == 200
    assert "alice@example.com" in response.content.decode()
    response = admin_client_staff.get("/admin/metering/dailyusage/", {"q": alice_key[0].public_id})
    assert response.context["cl"].result_count == 3
    ledgers = list(DailyUsage.objects.order_by("day"))
    response = admin_client_staff.post(
        "/admin/metering/dailyusage/",
        {"action": "export_csv", "_selected_action": [row.pk for row in ledgers]},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:3] == ["day", "user", "key"]
    assert [(r[0], r[1], int(r[4])) for r in rows[1:]] == [
        (row.day.isoformat(), "alice@example.com", row.requests) for row in ledgers
    ]
    assert sum(int(r[4]) for r in rows[1:]) == 130


def test_customers_cannot_open_the_usage_admin(client, alice, records):
    client.force_login(alice)
    response = client.get("/admin/metering/usagerecord/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.fixture
def admin_client_staff(client, staff):
    client.force_login(staff)
    return client


def test_on_postgresql_the_unfiltered_list_uses_the_planner_estimate(
    admin_client_staff, records, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("pg_class.reltuples is PostgreSQL's; SQLite gets the capped count")
    from metering import admin as metering_admin

    monkeypatch.setattr(metering_admin, "COUNT_CAP", 50)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE metering_usagerecord")
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client_staff.get("/admin/metering/usagerecord/")
    assert response.status_code == 200
    assert response.context["cl"].result_count == 130  # the estimate, exact after ANALYZE
    assert not [sql for sql in _record_table_queries(ctx) if "COUNT(" in sql.upper()]
    assert any("reltuples" in q["sql"] for q in ctx.captured_queries)
