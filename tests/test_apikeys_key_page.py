"""A key's page (/keys/<id>): its settings edited through the same service as the API (audit
diff, budgets only narrowing the plan, the next request sees them), its budgets' usage, and a
Rotate button with the same grace choice as the API, whose new secret is shown once."""

from __future__ import annotations

import pytest

from accounts.models import Plan
from apikeys.models import ApiKeyEvent
from apikeys.services import apikey_authenticate
from core.errors import InvalidApiKey


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def _settings(key, **overrides):
    form = {
        "name": key.name,
        "expires": "keep",
        "requests_per_minute": "",
        "tokens_per_minute": "",
        "requests_per_day": "",
        "tokens_per_day": "",
        "requests_per_month": "",
        "tokens_per_month": "",
    }
    form.update(overrides)
    return form


def test_the_page_shows_settings_budgets_and_the_trail(as_alice, alice_key):
    key, _ = alice_key
    response = as_alice.get(f"/keys/{key.pk}")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    page = response.content.decode()
    assert key.display_prefix in page
    assert 'id="budgets"' in page and "Requests per day" in page
    assert 'id="key-rotate"' in page
    # The list links to it.
    assert f'href="/keys/{key.pk}"' in as_alice.get("/keys").content.decode()


def test_saving_the_form_updates_the_key_audits_the_diff_and_reaches_the_next_request(
    as_alice, alice, alice_key, django_capture_on_commit_callbacks
):
    key, raw = alice_key
    apikey_authenticate(raw_key=raw)

    with django_capture_on_commit_callbacks(execute=True):
        response = as_alice.post(
            f"/keys/{key.pk}", _settings(key, name="nightly", requests_per_day="25")
        )

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.requests_per_day) == ("nightly", 25)
    event = ApiKeyEvent.objects.get(key=key, kind="updated")
    assert event.changes == {"name": ["alice's key", "nightly"], "requests_per_day": [None, 25]}
    assert apikey_authenticate(raw_key=raw).requests_per_day == 25
    page = as_alice.get(f"/keys/{key.pk}").content.decode()
    assert "requests_per_day</code>: — → 25" in page


def test_a_budget_above_the_plan_is_a_form_error(as_alice, alice_key, plan):
    Plan.objects.filter(pk=plan.pk).update(tokens_per_day=1000)
    key, _ = alice_key
    response = as_alice.post(f"/keys/{key.pk}", _settings(key, tokens_per_day="5000"))
    assert response.status_code == 400
    assert "can only narrow the plan" in response.content.decode()
    key.refresh_from_db()
    assert key.tokens_per_day is None


def test_bad_numbers_are_form_errors_not_500s(as_alice, alice_key):
    key, _ = alice_key
    for value in ("0", "-1", "many", str(2**70)):
        response = as_alice.post(f"/keys/{key.pk}", _settings(key, requests_per_month=value))
        assert response.status_code == 400, value


def test_rotate_shows_the_new_secret_once_and_the_key_page_shows_the_grace(
    as_alice, alice_key, django_capture_on_commit_callbacks
):
    key, old = alice_key
    assert as_alice.get(f"/keys/{key.pk}/rotate").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = as_alice.post(f"/keys/{key.pk}/rotate", {"grace": "3600"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    new = page.split('<div class="secret" id="new-key">')[1].split("</div>")[0]
    assert apikey_authenticate(raw_key=new).key_id == key.pk
    assert apikey_authenticate(raw_key=old).key_id == key.pk  # within its hour
    key.refresh_from_db()
    shown = key.previous_valid_until.strftime("%Y-%m-%d %H:%M")
    assert shown in page
    detail = as_alice.get(f"/keys/{key.pk}").content.decode()
    assert 'id="rotation-grace"' in detail and shown in detail
    assert new not in detail  # shown once, never again


def test_rotate_at_once_refuses_the_old_secret(
    as_alice, alice_key, django_capture_on_commit_callbacks
):
    key, old = alice_key
    apikey_authenticate(raw_key=old)
    with django_capture_on_commit_callbacks(execute=True):
        response = as_alice.post(f"/keys/{key.pk}/rotate", {"grace": "0"})
    assert "refused from now on" in response.content.decode()
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=old)


def test_a_made_up_grace_is_refused(as_alice, alice_key):
    key, _ = alice_key
    response = as_alice.post(f"/keys/{key.pk}/rotate", {"grace": "999999999"})
    assert response.status_code == 400
    key.refresh_from_db()
    assert key.rotated_at is None
