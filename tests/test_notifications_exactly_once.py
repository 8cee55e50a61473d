"""Exactly once under concurrency: two detector runs at the same moment (two threads, two
PostgreSQL connections), both reading the same counters and both seeing nothing sent yet, send
each (organization, subject, threshold, period) once: the unique constraint decides, not a
cache. PostgreSQL only (SQLite serialises writers, so it cannot show the race)."""

from __future__ import annotations

import threading

import pytest
from django.core import mail
from django.db import connection

from notifications import services
from notifications.models import Event, InboxItem, Notification
from notifications.services import notifications_detect
from tests.notify_support import eager_tasks, use  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_tasks")]

ORGS = 6


@pytest.fixture
def busy_orgs(make_user, make_key, plan):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): concurrent writers on one table")
    plan.requests_per_day = 10
    plan.save()
    users = []
    for i in range(ORGS):
        user = make_user(f"user{i}@example.com")
        _, raw = make_key(user, "k")
        use(raw, plan, 10)  # 100%: crosses 80 and 100 at once
        users.append(user)
    return users


def test_two_concurrent_detector_runs_send_each_crossing_once(busy_orgs, monkeypatch):
    barrier = threading.Barrier(2, timeout=30)
    real_source = services.plan_quota_readings

    def source_then_wait(now_ms):
        readings = list(real_source(now_ms))
        barrier.wait()  # both runs have read the counters; neither has written
        return readings

    monkeypatch.setattr(services, "QUOTA_SOURCES", [source_then_wait])
    results, errors = [], []

    def run():
        try:
            results.append(notifications_detect())
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sum(r.quota for r in results) == ORGS  # one 100% message per organization
    assert Notification.objects.filter(event=Event.QUOTA).count() == ORGS * 2  # 80 and 100
    quota_mails = [m for m in mail.outbox if "Quota alert" in m.subject]
    assert sorted(a for m in quota_mails for a in m.to) == sorted(u.email for u in busy_orgs)
    assert InboxItem.objects.count() == ORGS
