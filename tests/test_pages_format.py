"""Times and counts read one way on every page: relative times with the exact UTC time on hover
and for screen readers (never a raw ISO string), plural forms and grouped numbers."""

from __future__ import annotations

import re
import uuid

import pytest
from django.utils import timezone

from metering.models import UsageRecord

pytestmark = pytest.mark.django_db

ISO_WITH_FRACTION = re.compile(r">\s*\d{4}-\d\d-\d\dT[\d:.]+Z?\s*<")


def _record(user, key, tokens: int):
    UsageRecord.objects.create(
        request_id=uuid.uuid4().hex,
        user_id=user.pk,
        key_id=key.pk,
        model="cortensor/llama-3.1-8b",
        endpoint="chat.completions",
        outcome="ok",
        http_status=200,
        prompt_tokens=tokens - 1,
        completion_tokens=1,
        total_tokens=tokens,
        created_at=timezone.now(),
    )


@pytest.fixture
def alice_with_one_call(client, alice, alice_key, plan):
    plan.requests_per_day = 499_947
    plan.save()
    _record(alice, alice_key[0], 1_234_567)
    client.force_login(alice)
    return client


def test_usage_page_counts_and_reset_times(alice_with_one_call):
    page = alice_with_one_call.get("/usage").content.decode()
    assert re.search(r">1</span> request<", page)  # not "1 requests"
    assert "1,234,567</span> tokens" in page
    assert "of 499,947 used" in page  # live counters, grouped
    assert not ISO_WITH_FRACTION.search(page), "a raw ISO time is shown"
    resets = re.findall(
        r'Resets <time datetime="([^"]+)" title="([^"]+)" data-relative>([^<]+)</time>', page
    )
    assert resets, "no reset time is a relative <time>"
    for _stamp, exact, shown in resets:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", exact)
        assert re.fullmatch(r"now|in \d+ (s|min|h)", shown), shown
    assert any(exact.endswith("00:00:00 UTC") for _s, exact, _t in resets)  # the daily quota
    reset = re.search(r'title="([^"]+)"', page[page.index("Resets <time") :])
    # The exact time is also in the text, for screen readers.
    assert f'<span class="visually-hidden"> ({reset.group(1)})</span>' in page


def test_dashboard_plural_and_relative(alice_with_one_call):
    page = alice_with_one_call.get("/dashboard").content.decode()
    assert re.search(r'data-stat="requests-today">1</span> request</p>', page)
    assert re.search(r'data-stat="tokens-today">1,234,567</span> tokens</p>', page)
    assert "this month 1 request, 1,234,567 tokens" in page
    row = re.search(
        r'<td><time datetime="[^"]+" title="[^"]+ UTC" data-relative>([^<]+)</time>', page
    )
    assert row and re.fullmatch(r"now|\d+ s ago", row.group(1))


def test_keys_page_times(alice_with_one_call):
    page = alice_with_one_call.get("/keys").content.decode()
    assert "never" in page  # alice's key has no expiry
    assert re.search(
        r'title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC" data-relative>(now|\d+ s ago)<', page
    )
