"""The staff insights page in a real browser: charts drawn, tables and CSV links, screenshots
at desktop and phone widths in both themes (screenshots/insights-*.png), checked by axe."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect

from metering.services import usage_aggregate
from ops.insights import insights_build
from tests.builders import QWEN, usage_records

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_insights_page(page, context, live_server, staff, alice, bob, make_key, screenshot):
    a_key, _ = make_key(alice)
    b_key, _ = make_key(bob)
    now = timezone.now()
    for d in range(20):
        at = now - timedelta(days=d)
        usage_records(alice, a_key, n=3 + d % 4, at=at, latency_ms=300 + 10 * d, ttfb_ms=40 + d)
        usage_records(bob, b_key, n=2, at=at, model=QWEN, latency_ms=500, ttfb_ms=90)
        usage_records(bob, b_key, n=d % 3, at=at, outcome="rate_limited",
                      error_code="rate_limit_exceeded:p_rpm")  # fmt: skip
        usage_records(alice, a_key, n=d % 2, at=at, outcome="upstream_error", http_status=502)
    usage_aggregate()
    for d in range(21):
        insights_build(day=(now - timedelta(days=d)).date())
    client = Client()
    client.force_login(staff)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page.goto("/staff/insights")
    expect(page.locator("h1")).to_have_text("Insights")
    expect(page.locator('[data-insight-chart="requests"] svg')).to_be_visible()
    expect(page.locator('[data-insight-chart="latency"] polyline')).to_have_count(4)
    expect(page.locator('[data-insight-chart="refusals"] .chart-legend')).to_contain_text(
        "requests per minute (plan)"
    )
    expect(page.locator("#top-customers tbody tr")).to_have_count(2)
    expect(page.locator("#top-customers")).to_contain_text("alice")  # her organization
    screenshot(page, "insights")
