"""Changing and resetting a password, and the account pages around them."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

pytestmark = pytest.mark.django_db

OLD = "correct horse battery"  # tests/conftest.py's make_user default
NEW = "a brand new and long passphrase 7"
RESET_LINK = re.compile(r"https?://[^/\s]+(/accounts/password/reset/key/[^/\s]+/)")


def assert_portal_layout(response) -> None:
    body = response.content.decode()
    assert 'class="topbar"' in body, "not rendered inside templates/base.html"
    assert "css/portal.css" in body


def can_log_in(email: str, password: str) -> bool:
    client = Client(REMOTE_ADDR="198.51.100.20")
    client.post("/accounts/login/", {"login": email, "password": password})
    return "_auth_user_id" in client.session


def request_reset(client, email: str = "alice@example.com") -> str:
    response = client.post("/accounts/password/reset/", {"email": email})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/done/"
    assert len(mail.outbox) == 1
    match = RESET_LINK.search(mail.outbox[0].body)
    assert match, f"no reset link in:\n{mail.outbox[0].body}"
    return match.group(1)


def follow_reset_link(client, path: str):
    # allauth moves the key out of the URL into the session, then shows the form.
    response = client.get(path)
    assert response.status_code == 302
    form = client.get(response["Location"])
    assert form.status_code == 200
    return response["Location"], form


# --- change --------------------------------------------------------------------------------


def test_password_change_page_renders_in_the_account_layout(client, alice):
    client.force_login(alice)

    response = client.get("/accounts/password/change/")

    assert response.status_code == 200
    assert_portal_layout(response)
    body = response.content.decode()
    assert 'class="account-layout"' in body
    assert '<a href="/accounts/password/change/" aria-current="page">Password</a>' in body


def test_changing_the_password_swaps_which_one_works(client, alice):
    client.force_login(alice)

    response = client.post(
        "/accounts/password/change/", {"oldpassword": OLD, "password1": NEW, "password2": NEW}
    )

    assert response.status_code == 302
    assert "_auth_user_id" in client.session  # ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
    assert can_log_in("alice@example.com", NEW)
    assert not can_log_in("alice@example.com", OLD)


def test_a_wrong_current_password_changes_nothing(client, alice):
    client.force_login(alice)

    response = client.post(
        "/accounts/password/change/", {"oldpassword": "not it", "password1": NEW, "password2": NEW}
    )

    assert response.status_code == 200
    assert "Please type your current password." in response.content.decode()
    assert can_log_in("alice@example.com", OLD)
    assert not can_log_in("alice@example.com", NEW)


def test_password_change_needs_a_login(client, plan):
    response = client.get("/accounts/password/change/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


# --- reset ---------------------------------------------------------------------------------


def test_reset_pages_render_in_the_portal_layout(client, plan):
    for path in ("/accounts/password/reset/", "/accounts/password/reset/done/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_portal_layout(response)


def test_resetting_by_the_emailed_link_sets_a_new_password(client, alice):
    path = request_reset(client)
    assert mail.outbox[0].to == ["alice@example.com"]

    form_url, form = follow_reset_link(client, path)
    assert_portal_layout(form)
    response = client.post(form_url, {"password1": NEW, "password2": NEW})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/key/done/"
    assert can_log_in("alice@example.com", NEW)
    assert not can_log_in("alice@example.com", OLD)


def test_a_reset_link_works_only_once(client, alice):
    path = request_reset(client)
    form_url, _ = follow_reset_link(client, path)
    client.post(form_url, {"password1": NEW, "password2": NEW})

    again = Client()
    response = again.get(path)
    if response.status_code == 302:
        response = again.get(response["Location"])

    assert "The password reset link was invalid" in response.content.decode()
    assert can_log_in("alice@example.com", NEW)
    assert not can_log_in("alice@example.com", OLD)


def test_a_tampered_reset_link_is_refused(client, alice):
    path = request_reset(client)
    tampered = path[:-3] + ("x" if path[-3] != "x" else "y") + path[-2:]

    response = client.get(tampered)
    if response.status_code == 302:
        response = client.get(response["Location"])

    assert "The password reset link was invalid" in response.content.decode()
    assert can_log_in("alice@example.com", OLD)


def test_reset_for_an_unknown_address_sends_no_link(client, plan):
    response = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})

    # Same answer as for a real customer, so the form cannot probe who has an account.
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/done/"
    assert all(not RESET_LINK.search(message.body) for message in mail.outbox)


def test_password_reset_requests_are_throttled_per_address(client, alice):
    # ACCOUNT_RATE_LIMITS["reset_password"] = "20/m/ip,5/m/key".
    for n in range(5):
        response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
        assert response.status_code == 302, f"request {n + 1} was refused"

    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})

    assert response.status_code == 429
    assert len(mail.outbox) == 5


# --- the other account pages ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/accounts/email/", "/accounts/2fa/"])
def test_account_pages_render_in_the_account_layout(client, alice, path):
    client.force_login(alice)

    response = client.get(path)

    assert response.status_code == 200
    assert_portal_layout(response)
    body = response.content.decode()
    assert 'class="account-layout"' in body
    assert 'aria-label="Account settings"' in body


def test_email_page_lists_the_address_with_a_verified_badge(client, alice):
    client.force_login(alice)

    body = client.get("/accounts/email/").content.decode()

    assert "alice@example.com" in body
    assert '<span class="badge ok">' in body
