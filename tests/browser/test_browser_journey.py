"""A newcomer's whole journey in a real browser: sign up, verify the email, log in, create and
copy a key, call the API with it, see the call on the dashboard and usage pages, chat in the
playground, revoke the key and see the API refuse it. Screenshots of every page on the way."""

from __future__ import annotations

import re

import openai
import pytest
from django.core import mail
from playwright.sync_api import expect

from metering.services import usage_aggregate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "newcomer@example.com"
PASSWORD = "a long and unusual passphrase 42"
LLAMA = "cortensor/llama-3.1-8b"
CONFIRM_LINK = re.compile(r"https?://[^/\s]+(/accounts/confirm-email/[^/\s]+/)")


def _api(live_server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_newcomer_journey(page, live_server, catalog, plan, screenshot):
    # --- public pages -----------------------------------------------------------------------
    page.goto("/")
    expect(page.locator("h1")).to_contain_text("OpenAI-compatible")
    screenshot(page, "landing")
    page.goto("/models")
    expect(page.locator("#model-id-1")).to_have_text(LLAMA)
    page.goto("/accounts/login/")
    screenshot(page, "login")

    # --- sign up and verify the email -------------------------------------------------------
    page.goto("/accounts/signup/")
    screenshot(page, "signup")
    page.fill("#id_email", EMAIL)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/accounts/confirm-email/$"))
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [EMAIL]
    link = CONFIRM_LINK.search(mail.outbox[0].body).group(1)
    page.goto(link)
    page.locator("main form button[type=submit]").click()

    # --- log in (from a clean session, as the newcomer would the next day) ------------------
    page.context.clear_cookies()
    page.goto("/accounts/login/")
    page.fill("#id_login", EMAIL)
    page.fill("#id_password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/dashboard$"))
    expect(page.locator("#start-title")).to_have_text("Get started")
    expect(page.locator('[data-stat="active-keys"]')).to_have_text("0")

    # --- create a key and copy it -----------------------------------------------------------
    page.goto("/keys")
    page.fill("#id_name", "my laptop")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"ctsk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", secret)
    page.locator('button[data-copy="#new-key"]').click()
    expect(page.locator('button[data-copy="#new-key"]')).to_have_text("Copied")
    try:
        clipboard = page.evaluate("navigator.clipboard.readText()")
    except Exception:  # no clipboard permission here: the text shown is what counts
        clipboard = None
    if clipboard is not None:
        assert clipboard == secret

    # --- the docs show this key's prefix and this server's base URL ---------------------------
    page.goto("/docs")
    expect(page.locator("#snippet-env")).to_contain_text(secret[: len("ctsk_") + 12] + "_…")
    expect(page.locator("#snippet-python")).to_contain_text(live_server.url + "/v1")

    # --- call the API with it ---------------------------------------------------------------
    answer = _api(live_server, secret).chat.completions.create(
        model=LLAMA,
        messages=[{"role": "user", "content": "Hello from the browser test"}],
        max_tokens=4,
    )
    assert answer.choices[0].message.content == " word0 word1 word2 word3"

    page.goto("/dashboard")
    expect(page.locator("#start-title")).to_have_count(0)  # the first call succeeded
    row = page.locator("#recent-requests tbody tr").first
    expect(row).to_contain_text(LLAMA)
    expect(row).to_contain_text(secret[: len("ctsk_") + 12])
    expect(row).to_contain_text("ok")
    expect(page.locator('[data-stat="requests-today"]')).to_have_text("1")

    usage_aggregate()
    page.goto("/usage")
    expect(page.locator(".usage-card").first).to_contain_text(re.compile(r"1\s+request\b"))

    # --- the playground streams an answer -------------------------------------------------
    page.goto("/playground")
    page.select_option("#pg-model", LLAMA)
    page.fill("#pg-max-tokens", "6")
    page.fill("#pg-message", "Stream me something")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".chat-msg.assistant .chat-text").last
    expect(reply).to_have_text(" word0 word1 word2 word3 word4 word5")
    expect(page.locator("#pg-status")).to_contain_text("Done")
    expect(page.locator(".chat-msg.user .chat-text").last).to_have_text("Stream me something")
    expect(page.locator("#pg-error")).to_be_hidden()
    screenshot(page, "playground")

    page.goto("/keys")
    expect(page.locator("table.data").first).to_contain_text("Playground")
    page.goto("/dashboard")
    expect(page.locator("#recent-requests tbody tr").first).to_contain_text("Playground")
    screenshot(page, "dashboard")

    # --- revoke the key; the API refuses it -----------------------------------------------
    page.goto("/keys")
    page.locator("tr", has_text="my laptop").get_by_role("link", name="Revoke").click()
    page.locator("main form input[type=checkbox]").check()
    page.get_by_role("button", name="Revoke key").click()
    page.wait_for_url(re.compile(r"/keys$"))
    expect(page.locator(".messages")).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError):
        _api(live_server, secret).chat.completions.create(
            model=LLAMA, messages=[{"role": "user", "content": "Still there?"}], max_tokens=2
        )

    # --- the remaining pages, for the record ------------------------------------------------
    screenshot(page, "keys")
    for path, name in (("/models", "models"), ("/usage", "usage"), ("/docs", "docs")):
        page.goto(path)
        screenshot(page, name)
