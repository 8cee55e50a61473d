"""The usage page and its CSV export: the customer's own ledgers, and nobody else's."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from accounts.selectors import personal_org
from metering.models import DailyUsage
from metering.services import usage_aggregate
from tests.builders import LLAMA, QWEN, usage_record


@pytest.fixture
def usage(alice, bob, make_key, plan):
    """alice: two keys, two models, today and earlier; bob: a little of his own."""
    plan.requests_per_day = 100
    plan.tokens_per_month = 10_000
    plan.save()
    key_a, _ = make_key(alice, "prod")
    key_b, _ = make_key(alice, "staging")
    bob_key, _ = make_key(bob, "bob's")
    now = timezone.now()
    for days_ago, key, model, outcome, p, c in [
        (0, key_a, LLAMA, "ok", 100, 20),
        (0, key_a, QWEN, "ok", 7, 3),
        (0, key_b, LLAMA, "rate_limited", 0, 0),
        (3, key_b, QWEN, "ok", 40, 60),
        (12, key_a, LLAMA, "upstream_error", 5, 0),
        (45, key_a, LLAMA, "ok", 1000, 1000),
    ]:
        usage_record(
            alice,
            key,
            at=now - timedelta(days=days_ago),
            model=model,
            outcome=outcome,
            prompt=p,
            completion=c,
        )
    usage_record(bob, bob_key, at=now, prompt=999, completion=1)
    usage_aggregate()
    return {"keys": (key_a, key_b), "bob_key": bob_key}


@pytest.fixture(autouse=True)
def _fresh_limit_counters():
    # Without Redis the limits engine counts in this process's memory: start from zero.
    from metering import limits

    limits._backends.clear()


def _ledger_totals(user, *, since):
    rows = DailyUsage.objects.filter(user=user, day__gte=since)
    return (sum(r.requests for r in rows), sum(r.total_tokens for r in rows))


def _today():
    return timezone.now().astimezone(UTC).date()


def test_usage_page_needs_a_login(client):
    response = client.get("/usage")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_usage_page_shows_the_ledgers_in_a_handful_of_queries(
    client, alice, usage, django_assert_max_num_queries
):
    client.force_login(alice)
    # Session, user, the user's organizations (current and switcher), the ledger rows, the
    # key labels, the members' emails.
    with django_assert_max_num_queries(6):
        response = client.get("/usage")
    assert response.status_code == 200
    overview = response.context["overview"]
    today = _today()
    assert (
        (overview.today.requests, overview.today.total_tokens)
        == _ledger_totals(alice, since=today)
        == (3, 130)
    )
    assert (overview.month.requests, overview.month.total_tokens) == _ledger_totals(
        alice, since=today.replace(day=1)
    )
    assert overview.today.errors == 1

    chart = response.context["chart_data"]
    assert len(chart["days"]) == 30 and chart["days"][-1] == today.isoformat()
    by_model = {s["name"]: s for s in chart["model"]}
    assert sum(by_model[LLAMA]["requests"]) == 3  # today x2, 12 days ago; not 45 days ago
    assert by_model[QWEN]["tokens"][-1] == 10 and by_model[QWEN]["tokens"][-4] == 100
    by_key = {s["name"].split(" ")[0]: s for s in chart["key"]}
    assert sum(by_key["prod"]["requests"]) == 3 and sum(by_key["staging"]["requests"]) == 2
    assert (
        sum(sum(s["tokens"]) for s in chart["model"])
        == _ledger_totals(alice, since=today - timedelta(days=29))[1]
    )

    quotas = {name: q for name, _, q in response.context["quotas"]}
    assert quotas["requests_per_day"]["limit"] == 100
    assert quotas["tokens_per_month"]["limit"] == 10_000
    assert "requests_per_month" not in quotas  # unlimited: no card
    html = response.content.decode()
    assert 'id="usage-chart-data"' in html and "js/usage-chart.js" in html
    assert "bob" not in html


def test_limits_are_the_live_counters_of_the_limits_engine(client, alice, make_key, usage):
    from apikeys.services import apikey_authenticate
    from metering.limits import limits_admit

    _, raw = make_key(alice, "live")
    principal = apikey_authenticate(raw_key=raw)
    for i in range(2):
        limits_admit(
            principal=principal,
            plan=personal_org(alice).plan,
            reserve_tokens=10,
            request_id=f"r{i}",
        ).settle(total_tokens=25)
    client.force_login(alice)
    quotas = {name: q for name, _, q in client.get("/usage").context["quotas"]}
    assert (quotas["requests_per_day"]["used"], quotas["requests_per_day"]["remaining"]) == (2, 98)
    assert quotas["tokens_per_month"]["used"] == 50
    assert quotas["requests_per_day"]["reset_at"].endswith("T00:00:00Z")


def test_totals_include_records_not_aggregated_yet(client, alice, usage):
    usage_record(alice, usage["keys"][0], at=timezone.now(), prompt=1, completion=1)
    client.force_login(alice)
    overview = client.get("/usage").context["overview"]
    assert (overview.today.requests, overview.today.total_tokens) == (4, 132)
    usage_aggregate()
    assert _ledger_totals(alice, since=_today()) == (4, 132)
    overview = client.get("/usage").context["overview"]
    assert (overview.today.requests, overview.today.total_tokens) == (4, 132)  # not doubled


def _csv(response):
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_export_is_the_customers_own_ledger(
    client, alice, usage, django_assert_max_num_queries
):
    client.force_login(alice)
    with django_assert_max_num_queries(4):
        response = client.get("/usage/export.csv")
        rows = _csv(response)
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert rows[0] == [
        "day",
        "key",
        "model",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "estimated",
    ]
    expected = [
        [
            r.day.isoformat(),
            f"ctsk_{r.key.public_id}",
            r.model,
            str(r.requests),
            str(r.errors),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            str(r.total_tokens),
            str(r.estimated),
        ]
        for r in DailyUsage.objects.filter(user=alice)
        .select_related("key")
        .order_by("day", "key_id", "model")
    ]
    assert rows[1:] == expected
    assert len(expected) == 6


def test_bob_never_sees_alices_usage(client, bob, usage):
    client.force_login(bob)
    overview = client.get("/usage").context["overview"]
    assert (overview.today.requests, overview.today.total_tokens) == (1, 1000)
    assert overview.month.requests == 1
    rows = _csv(client.get("/usage/export.csv"))
    assert len(rows) == 2
    assert rows[1][1] == f"ctsk_{usage['bob_key'].public_id}"
    body = client.get("/usage").content.decode()
    for key in usage["keys"]:
        assert key.public_id not in body
    assert "prod" not in body and "staging" not in body


def test_estimated_figures_say_so_on_the_page_and_in_the_csv(client, alice, alice_key):
    from metering.recording import Usage, usage_record_write
    from metering.services import usage_aggregate

    key, _ = alice_key
    for rid, estimated in (("req_counted", False), ("req_guessed", True)):
        usage = Usage(request_id=rid, user_id=alice.pk, key_id=key.pk, endpoint="chat")
        usage.model, usage.completion_tokens, usage.estimated = "m", 10, estimated
        usage_record_write(usage)
    client.force_login(alice)
    assert b'class="estimated"' in client.get("/usage").content  # pending records
    usage_aggregate()
    assert b'class="estimated"' in client.get("/usage").content  # and from the ledger
    rows = _csv(client.get("/usage/export.csv"))
    assert [row[-1] for row in rows] == ["estimated", "1"]
