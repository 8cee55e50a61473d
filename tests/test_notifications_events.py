"""Each event besides quotas: a key expiring in 7 days and in 1 day, a key revoked or rotated
by someone other than its creator, members invited, joining and removed, and a key's first
successful call ("you're live"). Who hears: the organization's owners and admins, and for key
events the key's creator; by email (locmem) and in the portal."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import Membership
from accounts.services import invitation_create, member_add, member_remove, org_create
from apikeys.services import apikey_revoke
from notifications.models import Event, InboxItem, Notification
from notifications.services import notifications_detect, notify_key_rotated
from tests.notify_support import eager_tasks  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_tasks")]

LLAMA = "cortensor/llama-3.1-8b"


@pytest.fixture
def team(alice, bob):
    """Acme: alice owns it, bob is a member."""
    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role="member")
    mail.outbox.clear()
    Notification.objects.all().delete()
    return org


def _events(event: str) -> list[Notification]:
    return list(Notification.objects.filter(event=event).order_by("pk"))


def _to(subject_part: str) -> list[str]:
    return sorted(addr for m in mail.outbox if subject_part in m.subject for addr in m.to)


def test_a_key_expiring_in_7_days_then_in_1_day(alice, bob, team, make_key):
    now = timezone.now()
    key, _ = make_key(bob, "deploy", org=team, expires_at=now + timedelta(days=6, hours=12))
    notifications_detect(now=now)
    assert _to("API key expiring") == [alice.email, bob.email]  # the owner and the creator
    assert "expires in 7 days" in mail.outbox[-1].subject
    assert "Create a new key" in mail.outbox[-1].body
    notifications_detect(now=now)
    assert len(mail.outbox) == 2

    later = key.expires_at - timedelta(hours=20)
    notifications_detect(now=later)
    assert len(mail.outbox) == 4
    assert "expires in 1 day" in mail.outbox[-1].subject
    notifications_detect(now=later)
    assert len(mail.outbox) == 4


def test_a_key_already_within_a_day_gets_one_message_not_two(alice, alice_key):
    key, _ = alice_key
    key.expires_at = timezone.now() + timedelta(hours=5)
    key.save()
    notifications_detect()
    assert [m.subject.split(": ", 1)[1] for m in mail.outbox] == [
        f"API key {key.name} ({key.display_prefix}) expires in 1 day"
    ]


def test_a_key_revoked_by_someone_else_tells_its_creator_and_the_admins(alice, bob, team, make_key):
    key, _ = make_key(bob, "bob's key", org=team)
    apikey_revoke(key=key, actor=alice)
    [event] = _events(Event.KEY_REVOKED)
    assert "revoked by alice@example.com" in event.title
    assert _to("API key revoked") == [alice.email, bob.email]
    assert InboxItem.objects.filter(user=bob, notification=event).exists()


def test_revoking_ones_own_key_notifies_nobody(bob, team, make_key):
    key, _ = make_key(bob, "bob's key", org=team)
    apikey_revoke(key=key, actor=bob)
    assert _events(Event.KEY_REVOKED) == [] and mail.outbox == []


def test_a_rotation_by_someone_else_notifies_and_ones_own_does_not(alice, bob, team, make_key):
    key, _ = make_key(bob, "bob's key", org=team)
    notify_key_rotated(key=key, actor=bob)
    assert _events(Event.KEY_ROTATED) == []
    notify_key_rotated(key=key, actor=alice)
    [event] = _events(Event.KEY_ROTATED)
    assert "rotated by alice@example.com" in event.title
    assert _to("API key rotated") == [alice.email, bob.email]


def test_rotating_a_key_through_its_service_notifies_through_the_signal(alice, bob, team, make_key):
    from apikeys.services import apikey_rotate

    key, _ = make_key(bob, "bob's key", org=team)
    apikey_rotate(key=key, grace_seconds=0, actor=bob)  # one's own: nobody
    assert _events(Event.KEY_ROTATED) == []
    apikey_rotate(key=key, grace_seconds=0, actor=alice)
    [event] = _events(Event.KEY_ROTATED)
    assert "rotated by alice@example.com" in event.title


def test_members_invited_joining_and_removed(alice, bob, team, make_user, make_key):
    owner = Membership.objects.get(org=team, user=alice)
    invitation_create(actor=owner, email="carol@example.com", role="admin")
    [invited] = _events(Event.MEMBER_INVITED)
    assert invited.title == "carol@example.com was invited as admin"
    assert _to("Member invited") == [alice.email]  # owners and admins; bob is a member

    carol = make_user("carol@example.com")
    member_add(org=team, user=carol, role="admin")
    [joined] = _events(Event.MEMBER_JOINED)
    assert joined.title == "carol@example.com joined as admin"

    make_key(bob, "bob's key", org=team)
    mail.outbox.clear()
    member_remove(actor=owner, membership=Membership.objects.get(org=team, user=bob))
    [removed] = _events(Event.MEMBER_REMOVED)
    assert removed.title == "bob@example.com was removed by alice@example.com"
    assert _to("Member removed") == [alice.email, carol.email]
    # Their key was revoked by the removal, by someone else: they hear of that too.
    assert _to("API key revoked") == [alice.email, bob.email, carol.email]


def test_making_an_organization_is_not_someone_joining(alice):
    org_create(name="Solo", owner=alice)
    assert _events(Event.MEMBER_JOINED) == []


def test_a_keys_first_successful_call_says_youre_live(client, alice, alice_key, catalog):
    key, raw = alice_key
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    refused = client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": "no/such-model", "messages": [{"role": "user", "content": "x"}]}),
        content_type="application/json",
        **headers,
    )
    assert refused.status_code == 404
    notifications_detect()
    assert _events(Event.KEY_LIVE) == []  # a failed call is not live

    answered = client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "Hi"}]}),
        content_type="application/json",
        **headers,
    )
    assert answered.status_code == 200
    notifications_detect()
    [live] = _events(Event.KEY_LIVE)
    assert live.subject_id == key.pk and live.title.startswith("You're live")
    assert _to("You're live") == [alice.email]
    notifications_detect()
    assert len(_events(Event.KEY_LIVE)) == 1 and len(mail.outbox) == 1


def test_staff_revoking_a_key_is_named_as_support_not_by_address(alice, alice_key, staff):
    apikey_revoke(key=alice_key[0], actor=staff, actor_label="admin")
    [event] = _events(Event.KEY_REVOKED)
    assert event.title.endswith("was revoked by Cortensor support")
    assert all(staff.email not in m.body for m in mail.outbox)
