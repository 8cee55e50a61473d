"""The finished pages, in a real browser: the dev mailbox on the sign-up journey,
times and counts, forms, the playground (layout, Markdown, per-answer figures, "View code")."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LLAMA = "cortensor/llama-3.1-8b"
PASSWORD = "a long and unusual passphrase 42"


def log_in(context, live_server, user) -> None:
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


@pytest.fixture
def file_outbox(settings, tmp_path):
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    return tmp_path / "mail"


def test_sign_up_and_verify_through_the_dev_mailbox(page, plan, file_outbox, screenshot):
    page.goto("/accounts/signup/")
    page.fill("#id_email", "newcomer@example.com")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/accounts/confirm-email/$"))
    expect(page.locator("h1")).to_have_text("Verify your email address")
    screenshot(page, "verify-email")
    page.locator("#dev-mailbox-hint").get_by_role("link", name="dev mailbox").click()
    expect(page.locator("h1")).to_have_text("Dev mailbox")
    rows = page.locator("#dev-mailbox tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("newcomer@example.com")
    screenshot(page, "dev-mailbox")
    rows.first.get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text("Confirm your email")
    screenshot(page, "dev-mailbox-message")
    page.locator("#mail-body a[href*='/accounts/confirm-email/']").click()
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/dashboard$"))
    expect(page.locator("#start-title")).to_have_text("Get started")


def test_mailbox_is_404_without_debug_for_customers(page, live_server, alice, settings):
    settings.DEBUG = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    log_in(page.context, live_server, alice)
    assert page.goto("/dev/mail/").status == 404


def test_create_key_form_expiry_choices(page, live_server, alice, screenshot):
    log_in(page.context, live_server, alice)
    page.goto("/keys")
    date_box = page.locator('[data-field="expires_on"]')
    expect(date_box).to_be_hidden()  # "Never" is the default: no date to pick
    page.select_option("#id_expires", "date")
    expect(date_box).to_be_visible()
    expect(page.locator("#id_expires_on")).to_be_focused()
    page.fill("#id_name", "dated")
    page.get_by_role("button", name="Create key").click()
    # No date given: the error is tied to the date input and the box stays visible.
    expect(page.locator("#id_expires_on")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#id_expires_on_error")).to_contain_text("Choose the date")
    expect(date_box).to_be_visible()
    screenshot(page, "keys-form-errors")
    page.select_option("#id_expires", "30")
    expect(date_box).to_be_hidden()
    page.get_by_role("button", name="Create key").click()
    row = page.locator("tr", has_text="dated")
    expect(row.locator("td[data-label=Expires]")).to_have_text(re.compile(r"in (29|30) d"))
    # The exact time is on hover, and in the text for screen readers.
    expires = row.locator("td[data-label=Expires]").locator("time")
    expect(expires).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))


def test_playground(page, live_server, alice, catalog, make_key, screenshot):
    from catalog.models import CatalogModel

    CatalogModel.objects.filter(public_id=LLAMA).update(display_name="Llama 3.1 8B Instruct")
    key, _ = make_key(alice, "laptop")
    log_in(page.context, live_server, alice)
    page.goto("/playground")

    # At 1280 px the model menu shows its whole label.
    fits = page.evaluate(
        """() => {
        const select = document.getElementById("pg-model");
        const probe = document.createElement("span");
        probe.style.font = getComputedStyle(select).font;
        probe.style.position = "absolute";
        probe.style.whiteSpace = "nowrap";
        probe.textContent = select.options[select.selectedIndex].text;
        document.body.appendChild(probe);
        const needed = probe.getBoundingClientRect().width + 32;  // text + the arrow
        probe.remove();
        return [needed, select.clientWidth];
    }"""
    )
    assert fits[0] <= fits[1], f"the model menu cuts its label off: needs {fits[0]}, has {fits[1]}"
    expect(page.locator("#pg-model-id")).to_have_text(LLAMA)

    # A turn: the answer, then its tokens and time to first token.
    page.select_option("#pg-model", LLAMA)
    page.fill("#pg-max-tokens", "6")
    page.fill("#pg-message", "Stream me something")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".chat-msg.assistant .chat-text").last
    expect(reply).to_have_text("word0 word1 word2 word3 word4 word5")
    meta = page.locator(".chat-msg.assistant .chat-meta").last
    expect(meta).to_have_text(
        re.compile(r"^6 tokens · first token \d+\.\d+ s · \d+\.\d+ s in all$")
    )

    # "View code": the conversation so far, with the user's own key prefix and this server.
    page.get_by_role("button", name="View code").click()
    snippet = page.locator("#pg-code-snippet")
    expect(snippet).to_contain_text(f"curl {live_server.url}/v1/chat/completions")
    expect(snippet).to_contain_text(f"Bearer ctsk_{key.public_id}_…")
    expect(snippet).to_contain_text('"content": "Stream me something"')
    expect(snippet).to_contain_text('"max_tokens": 6')
    expect(snippet).not_to_contain_text("Hello!")  # nothing typed: no made-up next turn
    page.fill("#pg-message", "And now?")
    expect(snippet).to_contain_text('"content": "And now?"')
    expect(page.locator("#pg-stop")).to_be_hidden()
    page.get_by_role("button", name="Python").click()
    expect(page.get_by_role("button", name="Python")).to_have_attribute("aria-pressed", "true")
    expect(snippet).to_contain_text(f'OpenAI(base_url="{live_server.url}/v1"')
    expect(snippet).to_contain_text("client.chat.completions.create(")
    page.get_by_role("button", name="JavaScript").click()
    expect(snippet).to_contain_text('import OpenAI from "openai";')
    expect(snippet).to_contain_text(f'apiKey: "ctsk_{key.public_id}_…"')
    page.get_by_role("button", name="Anthropic SDK").click()  # the same key, Anthropic's API
    expect(snippet).to_contain_text(f'anthropic.Anthropic(base_url="{live_server.url}", api_key=')
    expect(snippet).to_contain_text("max_tokens=6")
    expect(snippet).to_contain_text("client.messages.create(")
    screenshot(page, "playground-code")

    # On a phone the settings come before the conversation, one above the other.
    page.set_viewport_size({"width": 390, "height": 844})
    settings_box = page.locator(".playground-settings").bounding_box()
    chat_box = page.locator(".playground-chat").bounding_box()
    assert settings_box["y"] + settings_box["height"] <= chat_box["y"]


def test_markdown_is_rendered_safely(page, live_server, alice, catalog):
    log_in(page.context, live_server, alice)
    page.goto("/playground")
    html = page.evaluate(
        """() => {
        const box = document.createElement("div");
        box.id = "md-test";
        box.appendChild(window.portal.renderMarkdown(
          "# Title\\nSome **bold**, *it*, `x < y` and [a link](https://example.com).\\n\\n" +
          "<img src=x onerror=alert(1)> <script>window.__pwned = 1</script>\\n" +
          "[bad](javascript:alert(1))\\n\\n- one\\n- two\\n\\n```python\\nprint('<b>')\\n```"
        ));
        document.querySelector("main").appendChild(box);
        return box.innerHTML;
    }"""
    )
    assert "<img" not in html and "<script" not in html  # shown as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript' not in html
    assert page.evaluate("window.__pwned") is None
    box = page.locator("#md-test")
    expect(box.locator("strong").first).to_have_text("Title")
    expect(box.locator("a")).to_have_attribute("href", "https://example.com")
    expect(box.locator("li")).to_have_count(2)
    code = box.locator(".codeblock pre code")
    expect(code).to_have_text("print('<b>')")
    box.locator(".codeblock button").click()
    expect(box.locator(".codeblock button")).to_have_text("Copied")


def test_keys_table_and_revoke_page(page, live_server, alice, make_key, screenshot):
    first, _ = make_key(alice, "production server")
    make_key(alice, "staging")
    log_in(page.context, live_server, alice)
    page.goto("/keys")
    prefixes = page.locator("#keys-table td.key-prefix code")
    expect(prefixes).to_have_count(2)
    for i in range(2):
        box = prefixes.nth(i).evaluate(
            "el => [el.getClientRects().length, getComputedStyle(el).fontFamily]"
        )
        assert box[0] == 1, "a key prefix wraps onto two lines"
        assert "mono" in box[1].lower()
    screenshot(page, "keys-two")
    # On a phone every key is a card: its rows stack, each value labelled.
    page.set_viewport_size({"width": 390, "height": 844})
    row = page.locator(f"#key-{first.pk}")
    assert row.evaluate("el => getComputedStyle(el).display") == "block"
    label = row.locator("td.key-prefix").evaluate("el => getComputedStyle(el, '::before').content")
    assert label == '"Key"'
    page.set_viewport_size({"width": 1280, "height": 800})
    row.get_by_role("link", name="Revoke").click()
    details = page.locator("dl.details")
    expect(details).to_be_visible()
    assert details.evaluate("el => getComputedStyle(el).display") == "grid"
    assert details.locator("dd").first.evaluate("el => getComputedStyle(el).marginLeft") == "0px"
    expect(details).to_contain_text(first.display_prefix)
    screenshot(page, "revoke")


def test_no_request_for_a_missing_favicon(page, live_server):
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto("/")
    page.wait_for_load_state("networkidle")
    icon = page.evaluate(
        "() => fetch('/favicon.ico').then(r => [r.status, r.headers.get('content-type')])"
    )
    assert icon[0] == 200 and icon[1].startswith("image/")
    assert missing == []


def _usage(user, key, *, days_ago: int, model: str, tokens: int):
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from metering.models import UsageRecord

    UsageRecord.objects.create(
        request_id=uuid.uuid4().hex,
        user_id=user.pk,
        key_id=key.pk,
        model=model,
        endpoint="chat.completions",
        outcome="ok",
        http_status=200,
        prompt_tokens=tokens - 1,
        completion_tokens=1,
        total_tokens=tokens,
        created_at=timezone.now() - timedelta(days=days_ago),
    )


def test_usage_chart(page, live_server, alice, make_key, screenshot):
    from metering.services import usage_aggregate

    key, _ = make_key(alice, "prod")
    _usage(alice, key, days_ago=0, model=LLAMA, tokens=1500)
    _usage(alice, key, days_ago=0, model="cortensor/qwen-2.5-7b", tokens=500)
    _usage(alice, key, days_ago=1, model=LLAMA, tokens=499_946)
    usage_aggregate()
    log_in(page.context, live_server, alice)
    page.goto("/usage")
    plot = page.locator("#usage-chart .chart-plot")
    expect(plot).to_have_attribute(
        "aria-label", re.compile(r"^Tokens per day, last 30 days: 501,946")
    )
    # Full width: as wide as the section it is in.
    widths = page.evaluate(
        "[document.querySelector('#usage-chart svg').getBoundingClientRect().width,"
        " document.querySelector('#usage-chart').parentElement.clientWidth]"
    )
    assert widths[0] >= widths[1] - 4
    legend = page.locator("#usage-chart .chart-legend li")
    expect(legend).to_have_count(2)
    expect(legend.first).to_have_text(f"{LLAMA} · 501,446")
    # Hover over today's bar: its values.
    plot.scroll_into_view_if_needed()
    box = page.locator("#usage-chart svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 14, box["y"] + box["height"] / 2)
    tip = page.locator("#usage-chart .chart-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("2,000 tokens")
    expect(tip).to_contain_text(f"{LLAMA}: 1,500")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] - 40)  # off the chart
    expect(tip).to_be_hidden()
    # The keyboard reaches the same values, and a live region reads them.
    plot.focus()
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("2,000 tokens")
    page.keyboard.press("ArrowLeft")
    expect(tip).to_contain_text("499,946 tokens")
    expect(page.locator("#usage-chart [aria-live]")).to_contain_text("499,946 tokens")
    page.keyboard.press("Home")
    expect(tip).to_contain_text("0 tokens")
    # Requests instead of tokens; split by key.
    page.get_by_role("radio", name="Requests").check()
    expect(plot).to_have_attribute("aria-label", re.compile(r"^Requests per day.*: 3 requests"))
    page.get_by_role("radio", name="API key").check()
    expect(legend).to_have_count(1)
    expect(legend.first).to_contain_text("prod (ctsk_")
    screenshot(page, "usage-chart")


def test_usage_chart_empty_state(page, live_server, alice):
    log_in(page.context, live_server, alice)
    page.goto("/usage")
    empty = page.locator("#usage-chart-empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("make your first call")
    expect(page.locator("#usage-chart")).to_be_hidden()


def _background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_dark_mode_follows_the_system_and_the_toggle_remembers(page, live_server, alice):
    log_in(page.context, live_server, alice)
    page.emulate_media(color_scheme="light")
    page.goto("/dashboard")
    light = _background(page)
    page.emulate_media(color_scheme="dark")
    dark = _background(page)
    assert light == "rgb(246, 247, 251)" and dark == "rgb(11, 16, 32)"
    toggle = page.locator("#theme-toggle")
    expect(toggle).to_have_text("Theme: system")
    toggle.click()  # system -> light, although the system is dark
    expect(toggle).to_have_text("Theme: light")
    assert _background(page) == light
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert _background(page) == light
    toggle.click()
    expect(toggle).to_have_text("Theme: dark")
    page.emulate_media(color_scheme="light")
    assert _background(page) == dark
    page.goto("/usage")
    assert _background(page) == dark
    toggle.click()  # back to the system's
    expect(page.locator("html")).not_to_have_attribute("data-theme", re.compile("."))
    assert _background(page) == light
