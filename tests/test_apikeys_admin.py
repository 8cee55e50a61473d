"""The admin as an operator console for keys: find, filter, revoke; never a hash or secret."""

from __future__ import annotations

import pytest

from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import apikey_authenticate
from core.errors import InvalidApiKey

CHANGELIST = "/admin/apikeys/apikey/"


@pytest.fixture
def as_staff(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def keys(alice, bob, make_key):
    from apikeys.services import apikey_revoke

    live, live_raw = make_key(alice, "alice live")
    gone, _ = make_key(bob, "bob gone")
    apikey_revoke(key=gone, actor=bob)
    return {"live": live, "live_raw": live_raw, "gone": gone}


def test_changelist_shows_keys_without_hashes(as_staff, keys):
    response = as_staff.get(CHANGELIST)

    html = response.content.decode()
    assert response.status_code == 200
    for key in (keys["live"], keys["gone"]):
        assert key.display_prefix in html
        assert key.secret_hash not in html
    assert "alice@example.com" in html and "bob@example.com" in html
    assert "secret_hash" not in html and "hash_version" not in html


def test_change_page_never_shows_the_hash(as_staff, keys):
    key = keys["live"]
    response = as_staff.get(f"{CHANGELIST}{key.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert key.display_prefix in html
    assert key.secret_hash not in html
    assert 'name="secret_hash"' not in html and 'name="owner"' not in html
    assert "created" in html  # the read-only trail inline


@pytest.mark.parametrize(("query", "expected"), [("alice@example", "live"), ("bob@", "gone")])
def test_search_by_owner_email(as_staff, keys, query, expected):
    html = as_staff.get(CHANGELIST, {"q": query}).content.decode()

    other = "gone" if expected == "live" else "live"
    assert keys[expected].display_prefix in html
    assert keys[other].display_prefix not in html


def test_search_by_public_id(as_staff, keys):
    html = as_staff.get(CHANGELIST, {"q": keys["gone"].public_id}).content.decode()

    assert keys["gone"].display_prefix in html
    assert keys["live"].display_prefix not in html


@pytest.mark.parametrize(("status", "expected"), [("active", "live"), ("revoked", "gone")])
def test_status_filter(as_staff, keys, status, expected):
    html = as_staff.get(CHANGELIST, {"status": status}).content.decode()

    other = "gone" if expected == "live" else "live"
    assert keys[expected].display_prefix in html
    assert keys[other].display_prefix not in html


def test_changelist_query_count_does_not_grow_with_keys(as_staff, alice, make_key):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_key(alice, "one")
    with CaptureQueriesContext(connection) as few:
        as_staff.get(CHANGELIST)
    for i in range(8):
        make_key(alice, f"more {i}")
    with CaptureQueriesContext(connection) as many:
        as_staff.get(CHANGELIST)

    assert len(many) == len(few)


def test_revoke_action_revokes_through_the_service(
    as_staff, staff, keys, django_capture_on_commit_callbacks
):
    live = keys["live"]
    apikey_authenticate(raw_key=keys["live_raw"])  # cached as valid

    with django_capture_on_commit_callbacks(execute=True):
        response = as_staff.post(
            CHANGELIST,
            {
                "action": "revoke_selected",
                "_selected_action": [live.pk, keys["gone"].pk],
                "confirmed": "yes",
            },
            REMOTE_ADDR="192.0.2.10",
            follow=True,
        )

    assert "Revoked 1 key(s)." in response.content.decode()
    live.refresh_from_db()
    assert live.revoked_at is not None
    event = ApiKeyEvent.objects.get(key=live, kind="revoked")
    assert (event.actor_id, event.actor_label, event.ip) == (staff.pk, "admin", "192.0.2.10")
    assert ApiKeyEvent.objects.filter(key=keys["gone"], kind="revoked").count() == 1
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=keys["live_raw"])


def test_adding_keys_in_the_admin_is_disabled(as_staff, keys):
    assert as_staff.get(f"{CHANGELIST}add/").status_code == 403
    assert f'href="{CHANGELIST}add/"' not in as_staff.get(CHANGELIST).content.decode()


def test_keys_are_revoked_in_the_admin_never_deleted(as_staff, keys):
    live = keys["live"]

    assert as_staff.get(f"{CHANGELIST}{live.pk}/delete/").status_code == 403
    assert as_staff.post(f"{CHANGELIST}{live.pk}/delete/", {"post": "yes"}).status_code == 403
    changelist = as_staff.get(CHANGELIST).content.decode()
    assert 'value="delete_selected"' not in changelist
    assert 'value="revoke_selected"' in changelist
    response = as_staff.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [live.pk], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert ApiKey.objects.filter(pk=live.pk).exists()


def test_deleting_the_owner_in_the_admin_takes_the_keys_and_the_cache_forgets_them(
    as_staff, keys, alice, django_capture_on_commit_callbacks
):
    raw = keys["live_raw"]
    apikey_authenticate(raw_key=raw)  # cached as valid

    with django_capture_on_commit_callbacks(execute=True):
        response = as_staff.post(f"/admin/accounts/user/{alice.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not ApiKey.objects.filter(pk=keys["live"].pk).exists()
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_suspending_the_owner_in_the_admin_refuses_their_keys(
    as_staff, keys, alice, django_capture_on_commit_callbacks
):
    raw = keys["live_raw"]
    apikey_authenticate(raw_key=raw)  # cached as valid

    with django_capture_on_commit_callbacks(execute=True):
        as_staff.post(
            "/admin/accounts/user/",
            {"action": "suspend_selected", "_selected_action": [alice.pk], "confirmed": "yes"},
        )

    alice.refresh_from_db()
    assert not alice.is_active
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)

    with django_capture_on_commit_callbacks(execute=True):
        as_staff.post(
            "/admin/accounts/user/",
            {"action": "reinstate_selected", "_selected_action": [alice.pk], "confirmed": "yes"},
        )
    assert apikey_authenticate(raw_key=raw).owner_id == alice.pk


def test_editing_goes_through_the_service_and_is_audited(
    as_staff, staff, keys, django_capture_on_commit_callbacks
):
    live = keys["live"]
    apikey_authenticate(raw_key=keys["live_raw"])

    with django_capture_on_commit_callbacks(execute=True):
        response = as_staff.post(f"{CHANGELIST}{live.pk}/change/", {
            "name": "renamed", "expires_at_0": "2001-01-01", "expires_at_1": "00:00:00",
            "requests_per_minute": "12", "tokens_per_minute": "",
            "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "1",
            "events-MIN_NUM_FORMS": "0", "events-MAX_NUM_FORMS": "0",
        }, REMOTE_ADDR="192.0.2.11")  # fmt: skip

    assert response.status_code == 302, response.content.decode()[:2000]
    live.refresh_from_db()
    assert (live.name, live.requests_per_minute, live.status) == ("renamed", 12, "expired")
    event = ApiKeyEvent.objects.get(key=live, kind="updated")
    assert (event.actor_id, event.ip) == (staff.pk, "192.0.2.11")
    # The cached entry was rewritten: the expiry applies on the very next call.
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=keys["live_raw"])


def test_events_admin_is_read_only(as_staff, keys):
    event = ApiKeyEvent.objects.filter(key=keys["gone"]).first()

    listing = as_staff.get("/admin/apikeys/apikeyevent/", {"q": keys["gone"].public_id})
    assert listing.status_code == 200
    assert "bob@example.com" in listing.content.decode()
    assert as_staff.get("/admin/apikeys/apikeyevent/add/").status_code == 403
    change = as_staff.post(f"/admin/apikeys/apikeyevent/{event.pk}/change/", {"kind": "updated"})
    assert change.status_code == 403
    event.refresh_from_db()
    assert event.kind != "updated"


def test_customers_cannot_open_the_admin(client, alice, keys):
    client.force_login(alice)

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert ApiKey.objects.count() == 2
