"""An organization's whole flow in a real browser: the owner makes a team and invites a
colleague; the colleague signs up through the emailed link, joins, creates a key and calls the
API; the owner sees that call in the organization's usage, removes the colleague (a deliberate,
confirmed act), and the colleague's key answers 401. Screenshots (and axe) of each new page."""

from __future__ import annotations

import re

import openai
import pytest
from django.core import mail
from playwright.sync_api import expect

from metering.services import usage_aggregate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COLLEAGUE = "dana@example.com"
PASSWORD = "a long and unusual passphrase 42"
LLAMA = "cortensor/llama-3.1-8b"
JOIN_LINK = re.compile(r"https?://[^/\s]+(/org/join/[^/\s]+)")
CONFIRM_LINK = re.compile(r"https?://[^/\s]+(/accounts/confirm-email/[^/\s]+/)")


def _log_in(page, email: str, password: str, next_path: str = "") -> None:
    page.goto("/accounts/login/" + (f"?next={next_path}" if next_path else ""))
    page.fill("#id_login", email)
    page.fill("#id_password", password)
    page.locator("main form button[type=submit]").click()


def test_owner_invites_colleague_who_joins_calls_and_is_removed(
    browser, context, page, live_server, catalog, alice, screenshot
):
    # --- the owner makes a team organization and invites a colleague -----------------------
    _log_in(page, alice.email, "correct horse battery")
    page.wait_for_url(re.compile(r"/dashboard$"))
    page.goto("/org")
    page.fill("#id_name", "Acme")
    page.get_by_role("button", name="Create organization").click()
    expect(page.locator("h1")).to_have_text("Acme")
    page.fill("#id_email", COLLEAGUE)
    page.select_option("#id_role", "member")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.locator(".messages")).to_contain_text(f"Invitation sent to {COLLEAGUE}")
    expect(page.locator("#invitations-table")).to_contain_text(COLLEAGUE)
    screenshot(page, "org")
    invitation_mail = mail.outbox[-1]
    assert invitation_mail.to == [COLLEAGUE]
    join_path = JOIN_LINK.search(invitation_mail.body).group(1)

    # --- the colleague follows the link, signs up, verifies, joins ------------------------
    colleague_ctx = browser.new_context(base_url=live_server.url)
    colleague_ctx.set_default_timeout(15_000)
    dana = colleague_ctx.new_page()
    dana.goto(join_path)
    expect(dana.locator("h1")).to_have_text("Join Acme")
    dana.locator("main").get_by_role("link", name="Sign up").click()
    dana.fill("#id_email", COLLEAGUE)
    dana.fill("#id_password1", PASSWORD)
    dana.fill("#id_password2", PASSWORD)
    dana.locator("main form button[type=submit]").click()
    dana.wait_for_url(re.compile(r"/accounts/confirm-email/$"))
    confirm = next(m for m in mail.outbox if m.to == [COLLEAGUE] and "confirm" in m.body)
    dana.goto(CONFIRM_LINK.search(confirm.body).group(1))
    dana.locator("main form button[type=submit]").click()
    dana.goto(join_path)
    if "/accounts/login/" in dana.url:  # not logged in by the confirmation: log in
        _log_in(dana, COLLEAGUE, PASSWORD, join_path)
    dana.get_by_role("button", name="Join Acme").click()
    dana.wait_for_url(re.compile(r"/dashboard$"))
    expect(dana.locator(".messages")).to_contain_text("You joined Acme as member")

    # --- the colleague creates a key of Acme and calls the API ------------------------------
    dana.goto("/keys")
    expect(dana.locator("h1")).to_contain_text("Acme")
    dana.fill("#id_name", "dana's laptop")
    dana.get_by_role("button", name="Create key").click()
    secret = dana.locator("#new-key").inner_text().strip()
    client = openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=secret, max_retries=0, timeout=20
    )
    answer = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "Hello from Acme"}], max_tokens=4
    )
    assert answer.choices[0].message.content == " word0 word1 word2 word3"

    # --- the owner sees the call in Acme's usage, by member ---------------------------------
    usage_aggregate()
    page.goto("/usage")
    expect(page.locator("h1")).to_have_text("Usage of Acme")
    expect(page.locator("#usage-by-member")).to_contain_text(COLLEAGUE)
    expect(page.locator("#usage-by-key")).to_contain_text("dana's laptop")
    screenshot(page, "usage-org")
    # Two organizations now: the switcher is in the navigation.
    expect(page.locator("#org-switcher select")).to_be_visible()

    # --- the owner removes the colleague: confirmed, and the key stops at once -------------
    page.goto("/org")
    page.locator("tr", has_text=COLLEAGUE).get_by_role("link", name="Remove").click()
    expect(page.locator("h1")).to_contain_text(f"Remove {COLLEAGUE}")
    screenshot(page, "org-remove")
    page.get_by_role("button", name="Remove member").click()  # not confirmed: nothing happens
    expect(page).to_have_url(re.compile(r"/remove$"))
    page.locator("main form input[type=checkbox]").check()
    page.get_by_role("button", name="Remove member").click()
    page.wait_for_url(re.compile(r"/org$"))
    expect(page.locator(".messages")).to_contain_text("the keys they created here are revoked")
    expect(page.locator("#members-table")).not_to_contain_text(COLLEAGUE)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model=LLAMA, messages=[{"role": "user", "content": "Still in?"}], max_tokens=2
        )
    colleague_ctx.close()
