"""Every portal page in a real browser, checked by axe-core (no serious or critical violation,
light and dark) and screenshotted at desktop and phone widths in both themes (screenshots/).
The journey and page tests check the pages in their other states (errors, results, menus)."""

from __future__ import annotations

import pytest
from django.core import mail
from playwright.sync_api import expect

from tests.browser.conftest import assert_accessible, axe_violations
from tests.browser.test_browser_pages import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PUBLIC = [
    ("/", "landing"),
    ("/models", "models"),
    ("/docs", "docs"),
    ("/accounts/login/", "login"),
    ("/accounts/signup/", "signup"),
    ("/accounts/password/reset/", "password-reset"),
    ("/no-such-page", "not-found"),
]
CUSTOMER = [
    ("/dashboard", "dashboard-new"),
    ("/keys", "keys-empty"),
    ("/usage", "usage-empty"),
    ("/playground", "playground-empty"),
    ("/docs", "docs-logged-in"),
    ("/accounts/email/", "account-email"),
    ("/accounts/password/change/", "account-password"),
    ("/accounts/2fa/", "account-2fa"),
    ("/accounts/logout/", "logout"),
]


@pytest.mark.parametrize(("path", "name"), PUBLIC, ids=[n for _, n in PUBLIC])
def test_public_pages(page, catalog, screenshot, path, name):
    page.goto(path)
    expect(page.locator("h1").first).to_be_visible()
    screenshot(page, name)


@pytest.mark.parametrize(("path", "name"), CUSTOMER, ids=[n for _, n in CUSTOMER])
def test_customer_pages(page, live_server, alice, catalog, screenshot, path, name):
    log_in(page.context, live_server, alice)
    page.goto(path)
    expect(page.locator("h1").first).to_be_visible()
    screenshot(page, name)


def test_pages_with_content(
    page, live_server, alice, catalog, make_key, screenshot, settings, tmp_path
):
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    key, _ = make_key(alice, "production server")
    mail.send_mail("Confirm your email address", "Open http://x/y", "n@localhost", [alice.email])
    log_in(page.context, live_server, alice)
    for path, name in (
        (f"/keys/{key.pk}/revoke", "revoke-page"),
        ("/dev/mail/", "dev-mailbox-list"),
    ):
        page.goto(path)
        screenshot(page, name)


def test_the_check_would_fail(page, live_server):
    """Not vacuous: axe reports a serious violation when there is one."""
    page.goto("/")
    assert axe_violations(page) == []
    page.evaluate(
        """() => { const i = document.createElement("img"); i.src = "/static/icons/favicon.svg";
                   document.querySelector("main").append(i); }"""
    )
    assert [v["id"] for v in axe_violations(page)] == ["image-alt"]
    with pytest.raises(AssertionError, match="image-alt"):
        assert_accessible(page, "landing with an unlabelled image")
