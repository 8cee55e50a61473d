"""The request log in a real browser, as support asks a customer to use it: a call fails,
the customer copies the request id from the error, pastes it into the log's search, opens the
request and sees the same status (and code) the response had; a successful call's page shows
the same tokens as its response's usage."""

from __future__ import annotations

import time

import openai
import pytest
from playwright.sync_api import expect

from metering.models import UsageRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LLAMA = "cortensor/llama-3.1-8b"


def _api(live_server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=key, max_retries=0, timeout=20)


def _recorded(request_id: str) -> UsageRecord:
    """The call's usage record, once its writer has written it (a deadline, not a sleep)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(request_id=request_id).first()
        if record is not None:
            return record
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


def _open_from_search(page, request_id: str) -> None:
    page.goto("/requests")
    page.fill("#log-q", request_id)
    page.get_by_role("button", name="Show").click()
    rows = page.locator("#request-log tbody tr")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("link", name=request_id).click()
    expect(page.locator("h1")).to_contain_text(request_id)


def test_a_customer_finds_a_failed_call_by_the_request_id_of_its_error(
    page, live_server, catalog, alice, make_key, screenshot
):
    _, secret = make_key(alice, "nightly job", requests_per_day=1)
    client = _api(live_server, secret)
    ok = client.chat.completions.with_raw_response.create(
        model=LLAMA, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    ok_id, usage = ok.headers["x-request-id"], ok.parse().usage
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(
            model=LLAMA, messages=[{"role": "user", "content": "Again"}], max_tokens=8
        )
    error = refused.value
    error_id = error.response.headers["x-request-id"]
    assert error.code == "insufficient_quota"
    assert "this key's daily request budget" in error.message
    _recorded(error_id)
    _recorded(ok_id)

    page.goto("/accounts/login/")
    page.fill("#id_login", alice.email)
    page.fill("#id_password", "correct horse battery")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(lambda url: "/accounts/login" not in url)

    _open_from_search(page, error_id)
    detail = page.locator("#request-detail")
    expect(detail.locator('[data-field="status"]')).to_have_text(str(error.status_code))
    expect(detail.locator('[data-field="error_code"]')).to_have_text("insufficient_quota")
    expect(detail.locator('[data-field="total_tokens"]')).to_have_text("0")
    expect(page.locator("main")).to_contain_text("No prompt or completion text is stored")
    screenshot(page, "request-detail")

    _open_from_search(page, ok_id)
    expect(detail.locator('[data-field="status"]')).to_have_text(str(ok.status_code))
    expect(detail.locator('[data-field="prompt_tokens"]')).to_have_text(str(usage.prompt_tokens))
    expect(detail.locator('[data-field="completion_tokens"]')).to_have_text(
        str(usage.completion_tokens)
    )
    expect(detail.locator('[data-field="total_tokens"]')).to_contain_text(str(usage.total_tokens))

    page.goto("/requests")
    expect(page.locator("#log-scope")).to_contain_text("No prompt or completion text")
    screenshot(page, "requests")

    # The key's page: its daily budget is spent (the refusal above), and it can be edited.
    page.goto("/keys")
    page.get_by_role("link", name="nightly job", exact=True).click()
    expect(page.locator("#budgets")).to_contain_text("Requests per day")
    expect(page.locator("#budgets tbody tr").first).to_contain_text("1")
    screenshot(page, "key")
