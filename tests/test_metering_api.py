"""`GET /v1/usage`: the calling key's usage and its owner's, matching the ledgers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from metering.models import DailyUsage
from metering.services import usage_aggregate
from tests.builders import usage_record


@pytest.fixture
def setup(alice, bob, make_key, plan):
    plan.requests_per_day = 50
    plan.tokens_per_day = 5000
    plan.save()
    key, raw = make_key(alice, "prod")
    other, _ = make_key(alice, "other")
    bob_key, _ = make_key(bob, "bob's")
    now = timezone.now()
    earlier_this_month = max(
        now - timedelta(days=2), now.replace(day=1, hour=0, minute=0, second=1)
    )
    usage_record(alice, key, at=now, prompt=10, completion=20)
    usage_record(alice, key, at=now, prompt=0, completion=0, outcome="rate_limited")
    usage_record(alice, other, at=now, prompt=100, completion=1)
    usage_record(alice, key, at=earlier_this_month, prompt=1, completion=2)
    usage_record(alice, key, at=now - timedelta(days=40), prompt=500, completion=500)
    usage_record(bob, bob_key, at=now, prompt=7, completion=7)
    usage_aggregate()
    return {"key": key, "raw": raw}


def _get(client, raw):
    return client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {raw}")


def _ledger(**filters):
    rows = DailyUsage.objects.filter(**filters)
    return {"requests": sum(r.requests for r in rows), "tokens": sum(r.total_tokens for r in rows)}


def test_usage_of_the_key_and_its_owner_match_the_ledgers(client, alice, setup):
    response = _get(client, setup["raw"])
    assert response.status_code == 200, response.content
    body = response.json()
    key = setup["key"]
    today = timezone.now().astimezone(UTC).date()
    month = today.replace(day=1)
    assert body["object"] == "usage"
    assert body["key"]["id"] == key.public_id and body["key"]["name"] == "prod"
    assert body["key"]["today"] == _ledger(key=key, day=today) == {"requests": 2, "tokens": 30}
    assert body["key"]["month"] == _ledger(key=key, day__gte=month)
    assert body["user"]["today"] == _ledger(user=alice, day=today) == {"requests": 3, "tokens": 131}
    assert body["user"]["month"] == _ledger(user=alice, day__gte=month)
    assert body["plan"]["name"] == "free"
    assert body["plan"]["requests_per_day"] == 50 and body["plan"]["requests_per_minute"] == 1000


def test_pending_records_count_as_they_will_once_in_the_ledgers(client, alice, make_key):
    """Records not folded into the ledgers yet (the last minute or two of traffic) are summed
    by the database per day, key, model and member: several alike each count, as they will
    once aggregated."""
    from metering.selectors import usage_for_key

    key, raw = make_key(alice, "prod")
    other, _ = make_key(alice, "other")
    now = timezone.now()
    usage_record(alice, key, at=now, prompt=10, completion=20)
    usage_record(alice, key, at=now, prompt=1, completion=2, outcome="rate_limited")
    usage_record(alice, key, at=now, prompt=0, completion=0, outcome="rate_limited")
    usage_record(alice, key, at=now, prompt=3, completion=4, estimated=True)
    usage_record(alice, key, at=now, prompt=2, completion=2, estimated=True)
    usage_record(alice, other, at=now, prompt=100, completion=1)

    def totals():
        usage = usage_for_key(org_id=key.org_id, key_id=key.pk)
        mine = {**usage.key_today.as_dict(), "estimated": usage.key_today.estimated}
        return mine, usage.org_month.as_dict(), _get(client, raw).json()["key"]

    pending = totals()
    assert pending[0] == {
        "requests": 5,
        "errors": 2,
        "prompt_tokens": 16,
        "completion_tokens": 28,
        "tokens": 44,
        "estimated": 2,
    }
    assert (pending[1]["requests"], pending[1]["tokens"]) == (6, 145)
    assert pending[2]["today"] == {"requests": 5, "tokens": 44}
    usage_aggregate()
    assert totals() == pending


@pytest.fixture(autouse=True)
def _fresh_limit_counters():
    # Without Redis the limits engine counts in this process's memory: start from zero.
    from metering import limits

    limits._backends.clear()


def test_limits_are_the_engines_live_counters_with_iso_resets(client, setup):
    from apikeys.services import apikey_authenticate
    from catalog.routing import routing_table
    from metering.limits import limits_admit

    principal = apikey_authenticate(raw_key=setup["raw"])
    plan = routing_table().plan_for(principal.plan_id)
    limits_admit(principal=principal, plan=plan, reserve_tokens=64, request_id="r1").settle(
        total_tokens=40
    )
    limits = _get(client, setup["raw"]).json()["limits"]
    assert {"requests_per_day", "tokens_per_day", "requests_per_minute"} <= set(limits)
    for entry in limits.values():
        assert {"limit", "used", "remaining", "reset_at"} <= set(entry)
    day = limits["requests_per_day"]
    assert (day["limit"], day["used"], day["remaining"]) == (50, 1, 49)
    assert limits["tokens_per_day"]["used"] == 40
    reset = datetime.fromisoformat(day["reset_at"].replace("Z", "+00:00"))
    assert reset > timezone.now() and (reset.hour, reset.minute) == (0, 0)
    assert limits["requests_per_month"]["limit"] is None  # unlimited on this plan


def test_a_key_narrowing_the_plan_shows_its_own_rate(client, alice, make_key, setup):
    _, raw = make_key(alice, "slow", requests_per_minute=5)
    body = _get(client, raw).json()
    assert body["plan"]["requests_per_minute"] == 5
    assert body["key"]["today"] == {"requests": 0, "tokens": 0}
    assert body["user"]["today"]["requests"] == 3  # the owner's usage, all keys


@pytest.mark.parametrize("header", ["", "Bearer nope", "Basic abc"])
def test_without_a_valid_key_it_is_a_401_in_openai_shape(client, header, setup):
    response = client.get("/v1/usage", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_gets_no_usage(client, setup):
    from apikeys.services import apikey_revoke

    apikey_revoke(key=setup["key"])
    assert _get(client, setup["raw"]).status_code == 401
