"""Quota crossings: the detector (Celery beat, every minute) reads the organization's plan
counters and notifies at each threshold once per period, by email (locmem), in the portal and
to webhooks; a new period notifies again. Both limits backends (Redis with REDIS_URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail

from notifications.models import Event, InboxItem, Notification
from notifications.services import notifications_detect, org_thresholds_set
from notifications.tasks import detect
from tests.notify_support import eager_tasks, use  # noqa: F401 - a fixture

# Real commits: mail and webhooks go out in transaction.on_commit, as in production.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def quota_plan(plan):
    plan.requests_per_day = 10
    plan.tokens_per_month = 1000
    plan.save()
    return plan


def _quota_mails():
    return [m for m in mail.outbox if "Quota alert" in m.subject]


def test_crossing_80_then_100_percent_notifies_each_once(alice, alice_key, quota_plan):
    _, raw = alice_key
    use(raw, quota_plan, 7)
    assert notifications_detect().quota == 0 and _quota_mails() == []  # 70 %: below 80

    use(raw, quota_plan, 1)
    result = notifications_detect()
    assert result.quota == 1
    [message] = _quota_mails()
    assert message.to == [alice.email]
    assert "80% of its requests per day" in message.subject
    body = message.body
    assert "8 of 10 requests today (80%)" in body  # the figure
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert f"The limit resets at {tomorrow} 00:00 UTC." in body  # when it resets
    assert "What to do next:" in body and "/usage" in body  # what to do
    assert "/notifications/unsubscribe/" in body
    html = message.alternatives[0][0]
    assert "8 of 10 requests today (80%)" in html and "Cortensor Portal" in html
    assert InboxItem.objects.filter(user=alice, read_at__isnull=True).count() == 1

    detect()  # the beat task: nothing new, nothing sent again
    assert len(_quota_mails()) == 1

    use(raw, quota_plan, 2)
    detect()
    assert len(_quota_mails()) == 2
    assert "used all of its requests per day" in _quota_mails()[-1].subject
    assert "429 insufficient_quota" in _quota_mails()[-1].body
    assert Notification.objects.filter(event=Event.QUOTA).count() == 2


def test_a_jump_past_several_thresholds_sends_only_the_highest(alice, alice_key, quota_plan):
    _, raw = alice_key
    use(raw, quota_plan, 10)
    notifications_detect()
    [message] = _quota_mails()
    assert "used all of its requests per day" in message.subject
    recorded = Notification.objects.filter(event=Event.QUOTA).order_by("threshold")
    assert [(n.threshold, n.delivered) for n in recorded] == [(80, False), (100, True)]
    notifications_detect()
    assert len(_quota_mails()) == 1


def test_a_new_period_notifies_again(alice, alice_key, quota_plan):
    _, raw = alice_key
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)
    ms = lambda dt: int(dt.timestamp() * 1000)  # noqa: E731

    use(raw, quota_plan, 8, now_ms=ms(today))
    assert notifications_detect(now=today).quota == 1
    assert notifications_detect(now=today).quota == 0
    assert notifications_detect(now=tomorrow).quota == 0  # the new day's counter is at 0

    use(raw, quota_plan, 8, now_ms=ms(tomorrow))
    assert notifications_detect(now=tomorrow).quota == 1
    periods = sorted(Notification.objects.values_list("period", flat=True))
    assert periods == [f"d{today:%Y%m%d}", f"d{tomorrow:%Y%m%d}"]
    assert len(_quota_mails()) == 2


def test_monthly_token_quota_and_the_organizations_thresholds(alice, alice_key, quota_plan):
    from accounts.models import Membership

    _, raw = alice_key
    owner = Membership.objects.get(user=alice, org__personal=True)
    org_thresholds_set(actor=owner, thresholds=[50])
    use(raw, quota_plan, 1, tokens=600)  # 600 of 1,000 tokens this month
    notifications_detect()
    [message] = _quota_mails()
    assert "50% of its tokens per month" in message.subject
    assert "600 of 1,000 tokens this month (60%)" in message.body


def test_other_organizations_never_hear_of_it(alice, alice_key, bob, quota_plan):
    _, raw = alice_key
    use(raw, quota_plan, 10)
    notifications_detect()
    assert all(bob.email not in m.to for m in mail.outbox)
    assert not InboxItem.objects.filter(user=bob).exists()


def test_a_keys_own_budget_notifies_its_creator_and_the_admins(alice, bob, plan, make_key):
    from accounts.services import member_add, org_create

    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role="member")
    key, raw = make_key(bob, "nightly", org=org, requests_per_day=10)
    mail.outbox.clear()
    use(raw, plan, 8)
    result = notifications_detect()
    assert result.quota == 1
    # The organization's owner and the key's creator (a plain member) both hear of it.
    assert sorted(addr for m in _quota_mails() for addr in m.to) == [alice.email, bob.email]
    [event] = Notification.objects.filter(event=Event.QUOTA)
    assert f"The key nightly (ctsk_{key.public_id}…) has used 80% of its requests per day" in (
        event.title
    )
    assert InboxItem.objects.filter(user=bob, notification=event).exists()
    notifications_detect()
    assert Notification.objects.filter(event=Event.QUOTA).count() == 1  # once per period
