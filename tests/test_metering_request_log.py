"""The request log (/requests): the organization's calls with filters, search by request id,
keyset pages, a detail page and a CSV of exactly the filtered rows; another organization's
records are never shown; bad filters are told, never a 500; a bounded number of queries."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.selectors import SESSION_ORG
from tests.builders import usage_record, usage_records

QWEN = "cortensor/qwen-2.5-7b"


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def log(alice, bob, make_key):
    """Alice's organization: two keys and a mix of calls over three days; bob's: one call."""
    now = timezone.now()
    prod, _ = make_key(alice, "prod")
    ci, _ = make_key(alice, "ci")
    bobs, _ = make_key(bob, "bob's")
    records = {
        "ok": usage_record(alice, prod, at=now - timedelta(minutes=1), ttfb_ms=120, latency_ms=900),
        "stream": usage_record(
            alice, prod, at=now - timedelta(minutes=2), streamed=True, estimated=True
        ),
        "limited": usage_record(
            alice, ci, at=now - timedelta(minutes=3), outcome="rate_limited",
            error_code="rate_limit_exceeded:p_rpm", prompt=0, completion=0,
        ),
        "upstream": usage_record(
            alice, ci, at=now - timedelta(days=1), model=QWEN, outcome="upstream_error",
            http_status=502, error_code="upstream_error",
        ),
        "old": usage_record(alice, prod, at=now - timedelta(days=2), model=QWEN),
        "bobs_call": usage_record(bob, bobs, at=now),
    }  # fmt: skip
    return {"prod": prod, "ci": ci, "bobs": bobs, **records}


def ids(response) -> list[str]:
    return [row.request_id for row in response.context["records"]]


def test_the_log_lists_the_organizations_calls_newest_first_and_says_what_it_keeps(
    as_alice, log, settings
):
    response = as_alice.get("/requests")
    assert response.status_code == 200
    newest_first = ("ok", "stream", "limited", "upstream", "old")
    assert ids(response) == [log[n].request_id for n in newest_first]
    page = response.content.decode()
    assert log["bobs_call"].request_id not in page
    assert f"for the last {settings.USAGE_RETENTION_DAYS} days" in page
    assert "No prompt or completion text is stored or shown" in page
    assert "rate_limit_exceeded" in page and "rate_limit_exceeded:p_rpm" not in page
    assert "estimated" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"key": "ci"}, ["limited", "upstream"]),
        ({"model": QWEN}, ["upstream", "old"]),
        ({"outcome": "rate_limited"}, ["limited"]),
        ({"status": "5xx"}, ["upstream"]),
        ({"status": "4xx"}, ["limited"]),
        ({"status": "2xx", "key": "prod"}, ["ok", "stream", "old"]),
        ({"from": "yesterday", "to": "yesterday"}, ["upstream"]),
        ({"q": "stream"}, ["stream"]),
    ],
)
def test_each_filter(as_alice, log, query, expected):
    today = timezone.now().date()
    names = {"yesterday": (today - timedelta(days=1)).isoformat()}
    params = {}
    for name, value in query.items():
        if name == "key":
            value = str(log[value].pk)
        elif name == "q":
            value = log[value].request_id
        params[name] = names.get(value, value)
    response = as_alice.get("/requests", params)
    assert ids(response) == [log[n].request_id for n in expected]


def test_another_organizations_request_id_or_key_finds_nothing(as_alice, log):
    assert ids(as_alice.get("/requests", {"q": log["bobs_call"].request_id})) == []
    assert ids(as_alice.get("/requests", {"key": log["bobs"].pk})) == []
    assert as_alice.get(f"/requests/{log['bobs_call'].request_id}").status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday-ish"},
        {"status": "3xx"},
        {"outcome": "<script>"},
        {"key": "-1"},
        {"key": "9" * 40},
        {"after": "not-a-cursor"},
        {"after": "9" * 18 + ".1"},
        {"q": "x" * 500},
    ],
)
def test_bad_filters_are_told_or_ignored_never_a_500(as_alice, log, params):
    response = as_alice.get("/requests", params)
    assert response.status_code == 200
    assert as_alice.get("/requests/export.csv", params).status_code == 200


def test_keyset_pages_walk_every_record_once(as_alice, alice, log):
    many = usage_records(alice, log["prod"], n=120, at=timezone.now() - timedelta(hours=1))
    seen: list[str] = []
    url = "/requests?key=" + str(log["prod"].pk)
    while url:
        response = as_alice.get(url)
        seen += ids(response)
        url = response.context["next_url"] and "/requests" + response.context["next_url"]
    # Records sharing one created_at are ordered by id: none lost or repeated at the edges.
    expected = 3 + len(many)
    assert len(seen) == len(set(seen)) == expected


def test_the_detail_page_shows_the_record_and_never_text(as_alice, log):
    response = as_alice.get(f"/requests/{log['ok'].request_id}")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-field="status">200<' in page
    assert 'data-field="total_tokens">15' in page
    assert "120 ms" in page
    assert "No prompt or completion text is stored or shown" in page


def test_the_csv_is_exactly_the_filtered_rows(as_alice, log):
    response = as_alice.get("/requests/export.csv", {"key": log["ci"].pk})
    assert response.status_code == 200
    assert response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = [log["limited"].request_id, log["upstream"].request_id]
    assert [r["request_id"] for r in rows] == expected
    assert rows[0]["error_code"] == "rate_limit_exceeded"
    assert rows[1]["http_status"] == "502"
    assert rows[0]["key"].startswith("ci (ctsk_")


def test_the_csv_streams_in_batches_past_one_batch(as_alice, alice, log, settings):
    from metering import selectors

    settings.DEBUG = False
    original = selectors.CSV_BATCH
    selectors.CSV_BATCH = 7
    try:
        usage_records(alice, log["prod"], n=20, at=timezone.now() - timedelta(hours=2))
        response = as_alice.get("/requests/export.csv")
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    finally:
        selectors.CSV_BATCH = original
    assert len(rows) == len({r["request_id"] for r in rows}) == 25


def test_a_page_takes_the_same_few_queries_however_many_records(as_alice, alice, log):
    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert as_alice.get(url).status_code == 200
        return len(captured)

    few = queries("/requests")
    usage_records(alice, log["ci"], n=80, model=QWEN)
    many = queries("/requests")
    filtered = queries(f"/requests?key={log['ci'].pk}&status=2xx&model={QWEN}")
    assert few == many == filtered
    assert many <= 8
    assert queries(f"/requests/{log['ok'].request_id}") <= 6


def test_members_see_the_whole_organizations_log(client, alice, bob, make_key):
    from accounts.services import member_add, org_create

    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role="member")
    alices, _ = make_key(alice, "alice's", org=org)
    record = usage_record(alice, alices)
    client.force_login(bob)
    session = client.session
    session[SESSION_ORG] = org.pk  # what the switcher keeps
    session.save()
    response = client.get("/requests", {"q": record.request_id})
    assert ids(response) == [record.request_id]
    assert client.get(f"/requests/{record.request_id}").status_code == 200
