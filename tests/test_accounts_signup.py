"""Signing up: a verification email whose link verifies and signs in, the default plan,
throttling."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail

from accounts.models import Plan, User
from accounts.selectors import personal_org

pytestmark = pytest.mark.django_db

PASSWORD = "a long and unusual passphrase 42"
CONFIRM_LINK = re.compile(r"https?://[^/\s]+(/accounts/confirm-email/[^/\s]+/)")


def assert_portal_layout(response) -> None:
    body = response.content.decode()
    assert 'class="topbar"' in body, "not rendered inside templates/base.html"
    assert "css/portal.css" in body


def sign_up(client, email: str = "carol@example.com", password: str = PASSWORD):
    return client.post(
        "/accounts/signup/", {"email": email, "password1": password, "password2": password}
    )


def confirm_path(message) -> str:
    match = CONFIRM_LINK.search(message.body)
    assert match, f"no confirmation link in:\n{message.body}"
    return match.group(1)


def test_sign_up_page_renders_in_the_portal_layout(client, plan):
    response = client.get("/accounts/signup/")

    assert response.status_code == 200
    assert_portal_layout(response)
    body = response.content.decode()
    assert 'class="card auth-card"' in body
    assert '<label for="id_email">' in body  # labels stay, even where allauth hides them


def test_sign_up_sends_a_verification_email_and_does_not_sign_in(client, plan):
    response = sign_up(client)

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["carol@example.com"]
    assert message.subject.startswith("[Cortensor Portal] ")
    assert message.body.startswith("Hello from Cortensor Portal!")
    assert confirm_path(message)
    carol = User.objects.get(email="carol@example.com")
    assert not EmailAddress.objects.get(user=carol).verified
    assert "_auth_user_id" not in client.session

    sent_page = client.get(response["Location"])
    assert sent_page.status_code == 200
    assert_portal_layout(sent_page)


def test_following_the_link_verifies_the_address_and_signs_in(client, plan):
    sign_up(client)
    path = confirm_path(mail.outbox[0])

    page = client.get(path)
    assert page.status_code == 200
    assert_portal_layout(page)
    assert "carol@example.com" in page.content.decode()

    response = client.post(path)

    assert response.status_code == 302
    assert response["Location"] == "/dashboard"
    carol = User.objects.get(email="carol@example.com")
    assert EmailAddress.objects.get(user=carol).verified
    assert client.session["_auth_user_id"] == str(carol.pk)


def test_a_forged_confirmation_link_verifies_nothing(client, plan):
    sign_up(client)

    response = client.post("/accounts/confirm-email/not-a-real-key/")

    assert response.status_code == 404
    assert not EmailAddress.objects.get(email="carol@example.com").verified
    assert "_auth_user_id" not in client.session
    page = client.get("/accounts/confirm-email/not-a-real-key/")
    assert page.status_code == 200
    assert_portal_layout(page)
    assert "expired or is invalid" in page.content.decode()


def test_new_sign_ups_get_the_default_plan(client, plan):
    Plan.objects.create(name="pro", requests_per_minute=10_000)

    sign_up(client)

    assert personal_org(User.objects.get(email="carol@example.com")).plan == plan


def test_sign_up_is_case_insensitive_about_existing_addresses(client, alice):
    response = sign_up(client, email="ALICE@example.com")

    # Same answer as a fresh sign-up (no account enumeration), but no second account.
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert User.objects.filter(email__iexact="alice@example.com").count() == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"]
    assert "already exists" in mail.outbox[0].body
    assert not CONFIRM_LINK.search(mail.outbox[0].body)


def test_mismatched_passwords_show_the_error_beside_the_field(client, plan):
    response = client.post(
        "/accounts/signup/",
        {"email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD + "x"},
    )

    assert response.status_code == 200
    assert not User.objects.filter(email="carol@example.com").exists()
    body = response.content.decode()
    assert 'class="field-errors"' in body
    assert "You must type the same password each time." in body
    assert mail.outbox == []


def test_sign_up_is_throttled_per_address_after_ten_attempts(client, plan):
    # ACCOUNT_RATE_LIMITS["signup"] = "10/m/ip": every POST counts, valid or not.
    for n in range(10):
        response = sign_up(client, email=f"user{n}@example.com")
        assert response.status_code == 302, f"attempt {n + 1} was refused"

    response = sign_up(client, email="one-too-many@example.com")

    assert response.status_code == 429
    assert_portal_layout(response)
    assert "Too many attempts" in response.content.decode()
    assert not User.objects.filter(email="one-too-many@example.com").exists()
    assert len(mail.outbox) == 10


def test_sign_up_throttle_counts_per_client_address(client, plan):
    for n in range(10):
        sign_up(client, email=f"user{n}@example.com")

    other = sign_up(client.__class__(REMOTE_ADDR="203.0.113.9"), email="elsewhere@example.com")

    assert other.status_code == 302
    assert User.objects.filter(email="elsewhere@example.com").exists()
