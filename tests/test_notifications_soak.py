"""A smaller soak of bench/notify_soak.py (the 10,000-organization figure is in BENCHMARKS.md):
500 organizations with their counters in Redis, one in ten past 80 %; one detector run
notifies exactly those, a second run nothing, and the counters are read in batches, not a
round trip per organization. Asserts correctness, not time."""

from __future__ import annotations

import os

import pytest

from bench.notify_soak import clean, fill
from notifications.models import Event, Notification
from notifications.services import notifications_detect
from tests.notify_support import eager_tasks  # noqa: F401 - a fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_tasks"),
]

ORGS = 500


@pytest.fixture
def filled(settings):
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis (REDIS_URL): the soak's counters live there")
    filled = fill(ORGS)
    yield filled
    clean(filled)


def test_one_run_notifies_every_crossing_once_from_batched_reads(filled, monkeypatch):
    from metering.limits.redis_backend import RedisBackend

    reads = []
    real = RedisBackend.read_counters

    def counting(self, names, *, now_ms):
        reads.append(len(names))
        return real(self, names, now_ms=now_ms)

    monkeypatch.setattr(RedisBackend, "read_counters", counting)
    first = notifications_detect()
    assert first.orgs_read == ORGS and first.quota == filled["crossing"] == ORGS // 10
    assert reads == [ORGS * 4]  # one batched read (a pipeline of MGETs) for all of them
    assert Notification.objects.filter(event=Event.QUOTA, threshold=80).count() == ORGS // 10
    assert notifications_detect().quota == 0
