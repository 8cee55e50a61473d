"""The public status page in a real browser, in a good and a degraded state, at desktop and
phone widths (screenshots/status-good-*.png, status-degraded-*.png), checked by axe."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from catalog.models import CatalogModel, Router, RouterPool
from catalog.services import router_record_health
from ops.models import Incident, IncidentUpdate, ModelDay
from ops.selectors import status_cache_clear
from ops.services import health_rollup, incident_sync

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fleet(db):
    pool = RouterPool.objects.create(name="pool-a")
    routers = [
        Router.objects.create(pool=pool, base_url=f"http://10.0.0.{i}:5010", session_id=i)
        for i in (1, 2)
    ]
    models = [
        CatalogModel.objects.create(public_id=p, display_name=n, pool=pool)
        for p, n in (("cortensor/llama-3.1-8b", "Llama 3.1 8B"), ("cortensor/qwen-2.5-7b", "Qwen"))
    ]
    today = timezone.now().date()
    ModelDay.objects.bulk_create(
        ModelDay(
            model=m.public_id,
            day=today - timedelta(days=d),
            buckets=288,
            degraded=12 if d % 17 == 3 else 0,
            down=30 if d == 41 and m.public_id.endswith("8b") else 0,
        )
        for m in models
        for d in range(1, 75)
    )
    health_rollup()
    status_cache_clear()
    return {"routers": routers, "models": models}


def test_status_good_and_degraded(page, fleet, screenshot):
    page.goto("/status")
    expect(page.locator("#status-overall")).to_contain_text("All models are operational")
    expect(page.locator("[data-state=operational]")).to_have_count(2)
    screenshot(page, "status-good")

    router_record_health(router=fleet["routers"][1], error="ConnectionError")
    health_rollup()
    incident = Incident.objects.create(title="Slower answers on Llama", started_at=timezone.now())
    incident.affected_models.set([fleet["models"][0]])
    IncidentUpdate.objects.create(
        incident=incident,
        status="identified",
        message="One router of the pool is down; the others take its traffic.",
        created_at=timezone.now(),
    )
    incident_sync(incident=incident)
    status_cache_clear()
    # Another URL: the browser may keep /status for its max-age, as it is told to.
    page.goto("/status?after=probe")
    expect(page.locator("#status-overall")).to_contain_text("degraded")
    expect(page.locator("[data-state=degraded]")).to_have_count(2)
    expect(page.locator("[data-incident]")).to_contain_text("Slower answers on Llama")
    expect(page.locator("#incident-banner")).to_be_visible()
    assert "10.0.0." not in page.content() and "pool-a" not in page.content()
    screenshot(page, "status-degraded")
