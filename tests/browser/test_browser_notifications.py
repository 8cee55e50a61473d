"""The bell in a real browser: alice's organization calls the API (the official SDK, against
the live server) until it crosses 80 % of its daily quota; the detector (what Celery beat runs
every minute) notices; the bell in the navigation shows one unread notification, the list and
the notification open, and opening it marks it read: the bell goes quiet. Screenshots (and
axe) of the list, the notification and the preferences and webhooks pages."""

from __future__ import annotations

import openai
import pytest
from django.core import mail
from playwright.sync_api import expect

from notifications.services import notifications_detect
from tests.browser.test_browser_pages import log_in
from tests.notify_support import eager_tasks  # noqa: F401 - a fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_tasks"),
]

LLAMA = "cortensor/llama-3.1-8b"


def test_the_bell_shows_a_quota_crossing_and_opening_it_marks_it_read(
    page, live_server, alice, plan, catalog, make_key, screenshot
):
    plan.requests_per_day = 5
    plan.save()
    _, secret = make_key(alice, "production")
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=secret, max_retries=0)
    log_in(page.context, live_server, alice)
    page.goto("/dashboard")
    expect(page.locator("#nav-bell")).to_be_visible()
    expect(page.locator("#nav-unread")).to_have_count(0)

    for _ in range(4):  # 4 of 5 requests today: 80 %
        client.chat.completions.create(
            model=LLAMA, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    notifications_detect()
    assert any("80% of its requests per day" in m.subject for m in mail.outbox)

    page.reload()
    # The quota crossing, and the key's first successful call ("you're live").
    expect(page.locator("#nav-unread")).to_have_text("2 unread")
    page.locator("#nav-bell").click()
    page.wait_for_url("**/notifications")
    unread = page.locator("#notification-list li.unread")
    expect(unread).to_have_count(2)
    quota = unread.filter(has_text="80% of its requests per day")
    expect(quota).to_have_count(1)
    expect(unread.filter(has_text="You're live")).to_have_count(1)
    screenshot(page, "notifications")

    quota.get_by_role("link").click()
    expect(page.locator("#notification-figure")).to_have_text("4 of 5 requests today (80%)")
    expect(page.locator("#nav-unread")).to_have_text("1 unread")  # opened: read
    screenshot(page, "notification")
    page.goto("/notifications")
    expect(page.locator("#notification-list li.unread")).to_have_count(1)
    read = page.locator("#notification-list li.read")
    expect(read).to_have_count(1)
    expect(read).to_contain_text("80% of its requests per day")

    page.goto("/notifications/settings")
    screenshot(page, "notification-settings")
    page.goto("/notifications/webhooks")
    screenshot(page, "webhooks")
