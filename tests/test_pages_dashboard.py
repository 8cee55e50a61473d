"""The dashboard: today's usage against the plan's live limits, recent requests, keys at a
glance, and the getting-started steps until the first successful call with one's own key."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apikeys.services import apikey_playground_principal, apikey_revoke
from catalog.routing import routing_table
from metering.models import UsageRecord
from metering.services import usage_aggregate
from tests.builders import usage_record

pytestmark = pytest.mark.django_db
LLAMA = "cortensor/llama-3.1-8b"


def _page(client, user) -> str:
    client.force_login(user)
    response = client.get("/dashboard")
    assert response.status_code == 200
    return response.content.decode()


def _recent_rows(body: str) -> list[str]:
    table = re.search(r'<table class="data" id="recent-requests">(.*?)</table>', body, re.S)
    return re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:] if table else []


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/dashboard")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/dashboard")


def test_a_new_account_sees_the_getting_started_steps_and_empty_states(client, alice):
    body = _page(client, alice)
    assert "Get started" in body
    steps = re.search(r'<ol class="checklist">(.*?)</ol>', body, re.S).group(1)
    items = re.findall(r"<li( class=\"done\")?>", steps)
    assert items == [' class="done"', "", ""]  # email verified; no key; no call
    assert "No requests yet." in body
    assert 'data-stat="active-keys">0<' in body
    assert "Plan: free" in body


def test_recent_requests_are_the_users_last_ten_with_key_prefix_and_outcome(
    client, alice, bob, make_key
):
    key, _ = make_key(alice, "prod")
    bob_key, _ = make_key(bob, "bob's")
    for minutes in range(12):
        usage_record(
            alice,
            key,
            at=timezone.now() - timedelta(minutes=minutes + 1),
            latency_ms=1000 + minutes,
        )
    usage_record(
        alice,
        key,
        at=timezone.now() - timedelta(seconds=5),
        outcome="rate_limited",
        error_code="rate_limit_exceeded",
        prompt=0,
        completion=0,
    )
    usage_record(bob, bob_key, model="bob-secret-model")
    body = _page(client, alice)
    rows = _recent_rows(body)
    assert len(rows) == 10
    assert "rate_limit_exceeded" in rows[0] and "rejected by a limit" in rows[0]
    assert f"ctsk_{key.public_id}…" in rows[0]
    assert "1,000 ms" in rows[1] and "1,008 ms" in rows[9]  # newest first, the 2 oldest cut
    assert "1,010 ms" not in body
    assert "bob-secret-model" not in body


def test_steps_go_away_after_a_successful_call_with_an_own_key(client, alice, make_key):
    key, _ = make_key(alice, "prod")
    usage_record(alice, key, outcome="upstream_error")
    body = _page(client, alice)
    assert "Get started" in body
    assert body.count('class="done"') == 2  # verified, key created
    usage_record(alice, key, outcome="ok")
    assert "Get started" not in _page(client, alice)


def test_a_playground_call_does_not_count_as_the_first_api_call(client, alice):
    principal = apikey_playground_principal(user=alice)
    usage_record(alice, type("K", (), {"pk": principal.key_id}))
    body = _page(client, alice)
    assert "Get started" in body
    assert "Playground <code>" in _recent_rows(body)[0]


def test_the_first_call_is_found_in_the_ledgers_after_records_are_pruned(client, alice, make_key):
    key, _ = make_key(alice, "prod")
    usage_record(alice, key, at=timezone.now() - timedelta(days=40))
    usage_aggregate()
    UsageRecord.objects.all().delete()
    body = _page(client, alice)
    assert "Get started" not in body
    assert "No requests yet." in body


def test_keys_at_a_glance_count_only_active_keys(client, alice, make_key):
    make_key(alice, "one")
    two, _ = make_key(alice, "two")
    make_key(alice, "old", expires_at=timezone.now() + timedelta(seconds=1))
    apikey_revoke(key=two)
    from apikeys.models import ApiKey

    ApiKey.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(days=1))
    body = _page(client, alice)
    assert 'data-stat="active-keys">1<' in body
    assert "one <code>" in body


def test_quota_bars_follow_the_live_limits_and_warn_near_a_limit(
    client, alice, alice_key, plan, catalog
):
    plan.requests_per_day = 5
    plan.save()
    routing_table()  # the plan change reaches the table
    _, raw = alice_key
    for _ in range(4):
        response = client.post(
            "/v1/chat/completions",
            data=json.dumps(
                {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 200, response.content
    body = _page(client, alice)
    bar = re.search(r'<li data-quota="requests_per_day">(.*?)</li>', body, re.S).group(1)
    assert "4 / 5" in bar
    # A <meter>, not a styled <div> (no style= attribute, for the CSP).
    assert re.search(r'<meter class="quota warn" min="0" max="5" value="4"', bar)
    assert "style=" not in bar
    assert "Resets <time" in bar
    assert "Near a limit:" in body and "Requests today is at 4 of 5 (80%)" in body
    assert 'data-stat="requests-today">4<' in body
    assert "Get started" not in body  # those were successful calls with her key


def test_below_eighty_percent_there_is_no_warning(client, alice, plan):
    plan.requests_per_day = 100
    plan.save()
    body = _page(client, alice)
    assert 'data-quota="requests_per_day"' in body
    assert "Near a limit" not in body and "Limit reached" not in body


def test_the_dashboard_needs_a_handful_of_queries(
    client, alice, make_key, django_assert_max_num_queries
):
    keys = [make_key(alice, f"k{i}")[0] for i in range(5)]
    for i in range(30):
        usage_record(alice, keys[i % 5], at=timezone.now() - timedelta(minutes=i))
    client.force_login(alice)
    routing_table()
    # (One more than before organizations: the organizations the user acts for.)
    with django_assert_max_num_queries(9):
        response = client.get("/dashboard")
    assert response.status_code == 200
    assert len(_recent_rows(response.content.decode())) == 10
