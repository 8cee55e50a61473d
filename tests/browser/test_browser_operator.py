"""An operator walks through an incident in the admin, in a real browser, against real router
simulators: the dashboard shows a router down, the operator drains it, "try this model" is
served by the other router, a probe succeeds once the router is back, the operator enables it
again, and the staff action log shows every step under the operator's name. Screenshots of the
dashboard and the pool page at 1280 px (screenshots/admin-*.png)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from catalog.models import CatalogModel, Router, RouterPool
from inference.tasks import probe_routers
from ops.fleet import fleet_cache_clear
from ops.services import health_rollup
from tests.browser.conftest import SCREENSHOTS, assert_accessible, save_full_page
from tests.routersim import RouterSim

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LLAMA = "cortensor/llama-3.1-8b"


@pytest.fixture
def sims():
    first, second = RouterSim("--sessions", "1"), RouterSim("--sessions", "1")
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def fleet(plan, sims):
    pool = RouterPool.objects.create(name="eu")
    routers = [
        Router.objects.create(
            pool=pool, name=f"eu-{i}", base_url=sim.url, session_id=1, token="default-dev-token"
        )
        for i, sim in enumerate(sims)
    ]
    model = CatalogModel.objects.create(
        public_id=LLAMA, pool=pool, display_name="Llama", default_max_tokens=16
    )
    return {"pool": pool, "routers": routers, "model": model}


def _log_in(context, live_server, user) -> None:
    client = Client()
    client.force_login(user)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{name} scrolls sideways at 1280 px ({overflow}px)"
    save_full_page(page, SCREENSHOTS / f"{name}.png")


def test_an_operator_handles_a_router_outage(page, context, live_server, staff, fleet, sims):
    down = fleet["routers"][1]
    sims[1].stop()
    probe_routers()
    health_rollup()
    fleet_cache_clear()
    _log_in(context, live_server, staff)

    # 1. The dashboard shows the router down, first thing.
    page.goto("/admin/")
    expect(page.locator("#site-name")).to_contain_text("Cortensor Portal operations")
    problems = page.locator("#fleet-problems")
    expect(problems).to_contain_text("Router eu-1 of pool eu is unhealthy")
    expect(page.locator(f'tr[data-router="{down.pk}"] [data-state]')).to_have_text("unhealthy")
    assert_accessible(page, "admin dashboard")
    _shot(page, "admin-dashboard-router-down")

    # 2. From there to the pool page, and drain the router (confirmed, with the shares).
    page.get_by_role("link", name="Pool eu").click()
    row = page.locator("tr", has=page.get_by_role("link", name="eu-1"))
    # The pool page itself, not the dashboard it is leaving, is what axe and the shot see.
    expect(row.locator('a[data-action="drain"]')).to_be_visible()
    assert_accessible(page, "pool page")
    _shot(page, "admin-pool-page")
    row.locator('a[data-action="drain"]').click()
    expect(page.locator("#router-change")).to_contain_text("unhealthy → draining")
    assert_accessible(page, "drain confirmation")
    page.locator("#router-action-apply").click()
    expect(page.locator(".messagelist")).to_contain_text("eu-1 is now draining")
    down.refresh_from_db()
    assert down.draining

    # 3. "Try this model": the other router serves.
    page.goto(f"/admin/catalog/catalogmodel/{fleet['model'].pk}/change/")
    page.get_by_role("link", name="Try this model").click()
    page.locator("#try-send").click()
    expect(page.locator("#try-router")).to_have_text("eu-0")
    expect(page.locator("#try-answer")).not_to_be_empty()
    assert_accessible(page, "try this model")

    # 4. The router is back: a probe succeeds, then the operator enables it.
    sims[1].start()
    page.goto(f"/admin/catalog/routerpool/{fleet['pool'].pk}/change/")
    row = page.locator("tr", has=page.get_by_role("link", name="eu-1"))
    row.locator('a[data-action="probe"]').click()
    page.locator("#router-action-apply").click()
    expect(page.locator(".messagelist")).to_contain_text("Probed eu-1: healthy")
    row = page.locator("tr", has=page.get_by_role("link", name="eu-1"))
    row.locator('a[data-action="enable"]').click()
    expect(page.locator("#router-change")).to_contain_text("draining → healthy")
    page.locator("#router-action-apply").click()
    expect(page.locator(".messagelist")).to_contain_text("eu-1 is now healthy")
    row = page.locator("tr", has=page.get_by_role("link", name="eu-1"))
    expect(row.locator("[data-state]")).to_have_text("healthy")

    # The router list fits 1280 px: health and enabled state are visible without scrolling.
    page.goto("/admin/catalog/router/")
    fits = page.evaluate(
        "document.querySelector('#result_list').getBoundingClientRect().right"
        " <= document.documentElement.clientWidth"
    )
    assert fits, "the router list overflows at 1280 px"
    expect(page.locator("#result_list th.column-state")).to_be_visible()
    _shot(page, "admin-router-list")

    # 5. The staff action log has every step, under the operator's name.
    page.goto("/admin/audit/staffaction/")
    rows = page.locator("#result_list tbody tr")
    for action in ("router.drain", "model.try", "router.probe", "router.enable"):
        expect(rows.filter(has_text=action)).to_have_count(1)
        expect(rows.filter(has_text=action)).to_contain_text("staff@example.com")
    assert_accessible(page, "staff action log")
    _shot(page, "admin-staff-actions")
