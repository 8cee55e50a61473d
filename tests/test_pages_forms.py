"""Every form renders through one template (templates/forms/field.html): a label without a
colon, the input, then errors and help text under it, both linked to the input with
aria-describedby. The key form offers its expiry as choices."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apikeys.models import ApiKey

pytestmark = pytest.mark.django_db


def _input(page: str, name: str) -> str:
    found = re.search(rf'<(input|select|textarea)[^>]*name="{name}"[^>]*>', page)
    assert found, f"no input named {name}"
    return found.group(0)


def test_create_key_form_layout(client, alice):
    client.force_login(alice)
    page = client.get("/keys").content.decode()
    assert '<label for="id_name">Name</label>' in page  # no colon
    name = _input(page, "name")
    assert 'aria-describedby="id_name_helptext"' in name
    # Help text comes after the input, not between the label and it.
    assert page.index('name="name"') < page.index('id="id_name_helptext"')
    expires = _input(page, "expires")
    assert expires.startswith("<select")
    options = re.findall(r'<option value="([^"]*)"', page[page.index('name="expires"') :])[:5]
    assert options == ["never", "7", "30", "90", "date"]


def test_errors_are_linked_to_their_input(client, alice):
    client.force_login(alice)
    response = client.post("/keys", {"name": "", "expires": "date", "nonce": "n-1"})
    assert response.status_code == 400
    page = response.content.decode()
    name = _input(page, "name")
    assert 'aria-invalid="true"' in name
    assert 'aria-describedby="id_name_helptext id_name_error"' in name
    assert re.search(r'<ul class="errorlist" id="id_name_error"><li>This field is required', page)
    day = _input(page, "expires_on")
    assert "id_expires_on_error" in day
    assert "Choose the date the key should stop working." in page
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_account_forms_use_the_same_template(client):
    page = client.get("/accounts/login/").content.decode()
    assert re.search(r'<div class="field" data-field="login">\s*<label for="id_login">', page)
    assert re.search(r'<div class="field" data-field="password">\s*<label for="id_password">', page)


@pytest.mark.parametrize("days", [7, 30, 90])
def test_expiry_in_n_days(client, alice, days):
    client.force_login(alice)
    before = timezone.now()
    response = client.post("/keys", {"name": f"{days}d", "expires": str(days), "nonce": f"n{days}"})
    assert response.status_code == 200
    key = ApiKey.objects.get(owner=alice, name=f"{days}d")
    assert before + timedelta(days=days) <= key.expires_at <= timezone.now() + timedelta(days=days)


def test_expiry_never_ignores_a_stray_date(client, alice):
    client.force_login(alice)
    day = (timezone.now() + timedelta(days=5)).date().isoformat()
    client.post("/keys", {"name": "n", "expires": "never", "expires_on": day, "nonce": "nn"})
    assert ApiKey.objects.get(owner=alice, name="n").expires_at is None


def test_expiry_on_a_date(client, alice):
    client.force_login(alice)
    day = (timezone.now() + timedelta(days=12)).date()
    client.post(
        "/keys", {"name": "d", "expires": "date", "expires_on": day.isoformat(), "nonce": "d"}
    )
    expires = ApiKey.objects.get(owner=alice, name="d").expires_at
    assert expires.date() == day and (expires.hour, expires.minute) == (0, 0)


def test_unknown_expiry_choice_is_a_form_error(client, alice):
    client.force_login(alice)
    response = client.post("/keys", {"name": "x", "expires": "forever", "nonce": "x"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
