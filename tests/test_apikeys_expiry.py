"""A key with an expiry stops working at that moment, even while its entry is cached."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate, apikey_create
from core.errors import InvalidApiKey, InvalidRequest


def test_key_stops_working_when_it_expires_without_any_write(alice):
    key, raw = apikey_create(
        owner=alice, name="short", expires_at=timezone.now() + timedelta(seconds=1.5)
    )
    apikey_authenticate(raw_key=raw)  # cached while still valid
    apikey_authenticate(raw_key=raw)

    time.sleep(max(0.0, (key.expires_at - timezone.now()).total_seconds()) + 0.1)

    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)
    assert ApiKey.objects.get(pk=key.pk).status == "expired"


def test_an_expiry_in_the_past_is_refused(alice):
    with pytest.raises(InvalidRequest) as caught:
        apikey_create(owner=alice, name="late", expires_at=timezone.now() - timedelta(minutes=1))
    assert caught.value.param == "expires_at"
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_page_sets_the_expiry_to_midnight_utc_of_the_chosen_date(client, alice):
    client.force_login(alice)
    day = timezone.now().date() + timedelta(days=30)

    response = client.post(
        "/keys", {"name": "month", "expires_on": day.isoformat(), "nonce": "n-exp"}
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(owner=alice)
    assert key.expires_at == datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.mark.parametrize("day", [date(2001, 1, 1), "today"])
def test_page_refuses_a_date_that_is_not_after_today(client, alice, day):
    client.force_login(alice)
    day = timezone.now().date() if day == "today" else day

    response = client.post(
        "/keys", {"name": "old", "expires_on": day.isoformat(), "nonce": "n-old"}
    )

    assert response.status_code == 400
    assert "Choose a date after today" in response.content.decode()
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_page_and_api_show_an_expired_key_as_expired(client, alice, alice_key):
    key, _ = alice_key
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    client.force_login(alice)

    assert 'class="badge warn">expired<' in client.get("/keys").content.decode()
    assert client.get(f"/api/keys/{key.pk}").json()["status"] == "expired"


def test_api_refuses_an_expiry_in_the_past(client, alice):
    client.force_login(alice)

    response = client.post(
        "/api/keys",
        {"name": "late", "expires_at": "2001-01-01T00:00:00Z"},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "expires_at"
    assert not ApiKey.objects.filter(owner=alice).exists()
