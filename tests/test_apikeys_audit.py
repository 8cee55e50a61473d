"""The audit trail: who created and revoked which key, when and from where; owner-only."""

from __future__ import annotations

import pytest

from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import apikey_revoke

ALICE_IP = "203.0.113.7"


@pytest.fixture
def trail(client, alice):
    """Alice creates a key on the page and revokes it on the page, from ALICE_IP."""
    client.force_login(alice)
    client.post("/keys", {"name": "audited", "nonce": "n-a"}, REMOTE_ADDR=ALICE_IP)
    key = ApiKey.objects.get(owner=alice)
    client.post(f"/keys/{key.pk}/revoke", {"confirm": "on"}, REMOTE_ADDR=ALICE_IP)
    client.logout()
    return key


def test_events_record_the_actor_and_ip(trail, alice):
    events = list(ApiKeyEvent.objects.filter(key=trail).order_by("pk"))

    assert [e.kind for e in events] == ["created", "revoked"]
    assert all(e.actor_id == alice.pk for e in events)
    assert all(e.ip == ALICE_IP for e in events)
    assert events[0].created_at <= events[1].created_at


def test_api_events_record_the_actor_and_ip(client, alice):
    client.force_login(alice)
    key_id = client.post(
        "/api/keys", {"name": "via api"}, content_type="application/json", REMOTE_ADDR=ALICE_IP
    ).json()["id"]
    client.delete(f"/api/keys/{key_id}", REMOTE_ADDR=ALICE_IP)

    events = ApiKeyEvent.objects.filter(key_id=key_id).order_by("pk")
    assert [(e.kind, e.actor_id, e.ip) for e in events] == [
        ("created", alice.pk, ALICE_IP),
        ("revoked", alice.pk, ALICE_IP),
    ]


def test_owner_sees_the_trail_on_the_keys_page(client, alice, trail):
    client.force_login(alice)

    html = client.get("/keys").content.decode()

    trail_html = html[html.index('id="audit-trail"') :]
    assert trail_html.count(ALICE_IP) == 2
    assert "created" in trail_html and "revoked" in trail_html
    assert "you (alice@example.com)" in trail_html
    assert trail.display_prefix in trail_html


def test_another_user_sees_none_of_it(client, bob, trail):
    client.force_login(bob)

    html = client.get("/keys").content.decode()

    assert 'id="audit-trail"' not in html
    assert ALICE_IP not in html
    assert trail.public_id not in html
    assert "Nothing yet" in html


def test_staff_actions_show_as_staff_without_their_details(client, alice, staff, alice_key):
    key, _ = alice_key
    apikey_revoke(key=key, actor=staff, actor_label="admin", ip="192.0.2.50")
    client.force_login(alice)

    html = client.get("/keys").content.decode()

    assert "Cortensor staff" in html
    assert "staff@example.com" not in html
    assert "192.0.2.50" not in html


def test_command_events_show_their_label(client, alice):
    from io import StringIO

    from django.core.management import call_command

    call_command(
        "apikey_create",
        "--email",
        alice.email,
        "--name",
        "from ops",
        stdout=StringIO(),
        stderr=StringIO(),
    )
    client.force_login(alice)

    html = client.get("/keys").content.decode()

    assert "manage.py apikey_create" in html[html.index('id="audit-trail"') :]
