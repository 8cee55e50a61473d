"""Logging in and out: verified customers only, throttled guessing, the portal's layout."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"  # tests/conftest.py's make_user default


def assert_portal_layout(response) -> None:
    body = response.content.decode()
    assert 'class="topbar"' in body, "not rendered inside templates/base.html"
    assert "css/portal.css" in body


def log_in(client, email: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"login": email, "password": password})


def signed_in_as(client) -> str | None:
    return client.session.get("_auth_user_id")


def test_login_page_renders_in_the_portal_layout(client, plan):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert_portal_layout(response)
    body = response.content.decode()
    assert '<label for="id_login">' in body
    assert '<label for="id_password">' in body


def test_a_verified_customer_logs_in_and_lands_on_the_dashboard(client, alice):
    response = log_in(client, "alice@example.com")

    assert response.status_code == 302
    assert response["Location"] == "/dashboard"
    assert signed_in_as(client) == str(alice.pk)


def test_login_ignores_the_case_of_the_email(client, alice):
    log_in(client, "Alice@Example.COM")

    assert signed_in_as(client) == str(alice.pk)


def test_a_wrong_password_is_refused_with_a_message(client, alice):
    response = log_in(client, "alice@example.com", "not her password")

    assert response.status_code == 200
    assert signed_in_as(client) is None
    assert "The email address and/or password you specified are not correct." in (
        response.content.decode()
    )


def test_an_unverified_sign_up_cannot_log_in_until_verified(client, plan):
    password = "a long and unusual passphrase 42"
    Client().post(
        "/accounts/signup/",
        {"email": "carol@example.com", "password1": password, "password2": password},
    )
    mail.outbox.clear()

    response = log_in(client, "carol@example.com", password)

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert signed_in_as(client) is None
    # The sign-up mail went out a moment ago: ACCOUNT_RATE_LIMITS["confirm_email"]
    # ("1/3m/key") keeps a login attempt from mailing the link again.
    assert mail.outbox == []


def test_an_unverified_user_made_elsewhere_cannot_log_in_either(client, make_user):
    make_user("dave@example.com", verified=False)

    log_in(client, "dave@example.com")

    assert signed_in_as(client) is None


def test_an_inactive_user_cannot_log_in(client, alice):
    alice.is_active = False
    alice.save()

    log_in(client, "alice@example.com")

    assert signed_in_as(client) is None


def test_logout_needs_a_post_and_ends_the_session(client, alice):
    client.force_login(alice)

    confirm = client.get("/accounts/logout/")
    assert confirm.status_code == 200
    assert_portal_layout(confirm)
    assert signed_in_as(client) == str(alice.pk)  # a GET (a link, a prefetch) logs nobody out

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert signed_in_as(client) is None


def test_the_header_logout_button_posts_with_a_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get("/accounts/email/").content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    assert '<form method="post" action="/accounts/logout/" class="inline">' in page

    response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert signed_in_as(client) is None


def test_repeated_wrong_passwords_lock_that_email_even_for_the_right_one(client, alice, bob):
    # ACCOUNT_RATE_LIMITS["login_failed"] = "10/m/ip,5/5m/key": five misses per address.
    for _ in range(5):
        log_in(client, "alice@example.com", "guess")

    response = log_in(client, "alice@example.com")

    assert signed_in_as(client) is None
    assert "Too many failed login attempts" in response.content.decode()
    # The lock is per address: bob, from the same client, still gets in.
    log_in(client, "bob@example.com")
    assert signed_in_as(client) == str(bob.pk)


def test_login_posts_are_throttled_per_client_address(client, alice):
    # ACCOUNT_RATE_LIMITS["login"] = "30/m/ip": every POST counts, right or wrong.
    for n in range(30):
        response = client.post(
            "/accounts/login/", {"login": f"nobody{n}@example.com", "password": "x"}
        )
        assert response.status_code == 200, f"attempt {n + 1} was refused"

    response = log_in(client, "alice@example.com")

    assert response.status_code == 429
    assert_portal_layout(response)
    assert signed_in_as(client) is None
    # Another address is not affected.
    other = Client(REMOTE_ADDR="203.0.113.7")
    log_in(other, "alice@example.com")
    assert signed_in_as(other) == str(alice.pk)


def test_signed_in_users_visiting_login_are_sent_on(client, alice):
    client.force_login(alice)

    response = client.get("/accounts/login/")

    assert response.status_code == 302
    assert response["Location"] == "/dashboard"
