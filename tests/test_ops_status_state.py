"""A model's state on the status page, from its pool's probes and its recent real outcomes.

The routers are real simulators over HTTP, probed as Celery probes them; the history rows are
what `ops.tasks.roll_up_health` writes every minute.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import CatalogModel, Router, RouterPool
from inference.probes import router_probe
from ops.models import ModelDay, ModelHealth
from ops.services import Outcomes, bucket_of, health_prune, health_rollup, model_state
from ops.tasks import roll_up_health
from tests.builders import LLAMA, usage_record, usage_records

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(db, sims):
    pool = RouterPool.objects.create(name="eu-pool")
    for i, sim in enumerate(sims):
        Router.objects.create(
            pool=pool, name=f"r{i}", base_url=sim.url, session_id=1, token="default-dev-token"
        )
    CatalogModel.objects.create(public_id=LLAMA, pool=pool, display_name="Llama")
    return pool


def _probe_all() -> None:
    for router in Router.objects.all():
        router_probe(router=router)


def _state(model: str = LLAMA) -> str:
    return ModelHealth.objects.filter(model=model).order_by("-bucket").first().state


def test_one_router_down_degrades_all_down_is_down_and_recovery_is_operational(pool, sims):
    _probe_all()
    roll_up_health()
    assert _state() == "operational"

    sims[1].stop()
    _probe_all()
    roll_up_health()
    assert _state() == "degraded"

    sims[0].stop()
    _probe_all()
    roll_up_health()
    assert _state() == "down"

    sims[0].start()
    sims[1].start()
    _probe_all()
    roll_up_health()
    assert _state() == "operational"


def test_a_disabled_or_draining_router_is_not_capacity_that_is_missing(pool, sims):
    first, second = pool.routers.order_by("id")
    second.enabled = False
    second.save()
    sims[1].stop()
    _probe_all()
    roll_up_health()
    assert _state() == "operational"  # the operator took it out: nothing is failing

    first.draining = True
    first.save()
    roll_up_health()
    assert _state() == "down"  # nothing left to take traffic


def test_recent_upstream_errors_degrade_and_mostly_failing_is_down(pool, alice, alice_key):
    key, _ = alice_key
    _probe_all()
    usage_records(alice, key, n=18, outcome="ok", ttfb_ms=120)
    usage_records(alice, key, n=2, outcome="upstream_error")
    roll_up_health()
    assert _state() == "degraded"  # 10% of routed requests failed upstream

    usage_records(alice, key, n=30, outcome="timeout")
    roll_up_health()
    assert _state() == "down"


def test_refusals_and_bad_requests_say_nothing_about_health(pool, alice, alice_key):
    key, _ = alice_key
    _probe_all()
    usage_records(alice, key, n=20, outcome="rate_limited")
    usage_records(alice, key, n=20, outcome="client_error", http_status=400)
    roll_up_health()
    row = ModelHealth.objects.get(model=LLAMA)
    assert row.state == "operational"
    assert row.requests == 0


def test_outcomes_older_than_five_minutes_no_longer_count(pool, alice, alice_key):
    key, _ = alice_key
    _probe_all()
    usage_records(
        alice, key, n=20, outcome="upstream_error", at=timezone.now() - timedelta(minutes=6)
    )
    roll_up_health()
    assert _state() == "operational"


def test_bucket_counts_and_the_previous_bucket_is_recounted(pool, alice, alice_key):
    key, _ = alice_key
    now = timezone.now()
    current = bucket_of(now)
    _probe_all()
    usage_records(alice, key, n=3, outcome="ok", ttfb_ms=100, at=current + timedelta(seconds=1))
    health_rollup(now=now)
    row = ModelHealth.objects.get(model=LLAMA, bucket=current)
    assert (row.requests, row.upstream_errors, row.ttfb_p50_ms, row.routers_up) == (3, 0, 100, 2)

    # A record of that bucket written late, seen by the next bucket's first run.
    usage_record(alice, key, outcome="upstream_error", at=current + timedelta(seconds=2))
    health_rollup(now=current + timedelta(minutes=5, seconds=10))
    row.refresh_from_db()
    assert (row.requests, row.upstream_errors) == (4, 1)
    assert ModelHealth.objects.filter(model=LLAMA).count() == 2
    day = ModelDay.objects.get(model=LLAMA, day=current.date())
    assert day.buckets >= 1 and day.down == 0


def test_rollup_twice_writes_the_same_rows(pool):
    _probe_all()
    now = timezone.now()
    health_rollup(now=now)
    health_rollup(now=now)
    assert ModelHealth.objects.count() == 1
    assert ModelDay.objects.count() == 1


def test_history_is_pruned_after_ninety_days(pool):
    old = timezone.now() - timedelta(days=91)
    ModelHealth.objects.create(
        model=LLAMA, bucket=bucket_of(old), state="operational", updated_at=old
    )
    ModelDay.objects.create(model=LLAMA, day=old.date(), buckets=288)
    health_rollup()
    assert health_prune() == 2
    assert ModelHealth.objects.count() == 1  # today's row stays


@pytest.mark.parametrize(
    ("routers", "up", "outcomes", "state"),
    [
        (2, 2, Outcomes(), "operational"),
        (2, 1, Outcomes(), "degraded"),
        (2, 0, Outcomes(), "down"),
        (0, 0, Outcomes(), "down"),
        (1, 1, Outcomes(4, 4, 0), "operational"),  # too few requests to judge
        (1, 1, Outcomes(100, 4, 0), "operational"),
        (1, 1, Outcomes(100, 3, 2), "degraded"),
        (1, 1, Outcomes(100, 30, 20), "down"),
        (1, 1, Outcomes(100, 0, 0, 10_001), "degraded"),
        (1, 1, Outcomes(100, 0, 0, 9_000), "operational"),
    ],
)
def test_model_state(routers, up, outcomes, state):
    assert model_state(routers=routers, routers_up=up, outcomes=outcomes) == state
