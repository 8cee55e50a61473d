"""Who gets in: multi-factor authentication is available and enforced at log-in, the admin is
for staff only, and weak passwords are refused at sign-up."""

from __future__ import annotations

import io
import types

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal import auth as totp_auth
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
)
from django.core.management import call_command
from django.test import Client

from accounts.models import User

PASSWORD = "correct horse battery"  # tests/conftest.py's make_user default


def _with_totp(user) -> str:
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


# The authenticator's clock, pinned: a code computed just before a 30-second step ends would be
# checked in the next one on a busy machine (the test's clock is injected, not raced).
_NOW = 1_790_000_010.0


@pytest.fixture(autouse=True)
def _pinned_totp_clock(monkeypatch):
    monkeypatch.setattr(totp_auth, "time", types.SimpleNamespace(time=lambda: _NOW))


def _code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(_NOW) // 30))


# --- multi-factor -------------------------------------------------------------------------------


def test_mfa_pages_are_available_to_every_customer(client, alice):
    client.force_login(alice)
    index = client.get("/accounts/2fa/")
    assert index.status_code == 200
    assert "/accounts/2fa/totp/activate/" in index.content.decode()


def test_mfa_pages_need_a_login(client, db):
    response = client.get("/accounts/2fa/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_with_totp_the_password_alone_does_not_log_in(client, alice):
    secret = _with_totp(alice)

    response = client.post("/accounts/login/", {"login": alice.email, "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/authenticate/")
    assert client.get("/keys").status_code == 302  # not logged in yet
    done = client.post("/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert done.status_code == 302
    assert client.get("/keys").status_code == 200


def test_a_wrong_code_does_not_log_in(client, alice):
    secret = _with_totp(alice)
    client.post("/accounts/login/", {"login": alice.email, "password": PASSWORD})
    wrong = str((int(_code(secret)) + 1) % 1_000_000).zfill(6)

    response = client.post("/accounts/2fa/authenticate/", {"code": wrong})

    assert response.status_code == 200  # the form again, with an error
    assert client.get("/keys").status_code == 302


def test_totp_secret_is_not_shown_back(client, alice):
    secret = _with_totp(alice)
    client.force_login(alice)
    for path in ("/accounts/2fa/", "/accounts/2fa/recovery-codes/"):
        assert secret not in client.get(path).content.decode()
    assert Authenticator.objects.filter(user=alice).exists()


# --- the admin ----------------------------------------------------------------------------------


def test_customers_cannot_log_in_to_the_admin(client, alice):
    response = client.post(
        "/admin/login/?next=/admin/", {"username": alice.email, "password": PASSWORD}
    )
    # The form again with an error (or, with allauth's secure_admin_login, the portal log-in).
    assert response.status_code in {200, 302}
    assert response.get("Location", "").split("?")[0] != "/admin/"
    assert client.get("/admin/").status_code == 302


def test_staff_with_mfa_cannot_enter_the_admin_with_the_password_alone(staff):
    client = Client()
    client.post("/admin/login/?next=/admin/", {"username": staff.email, "password": PASSWORD})
    assert client.get("/admin/").status_code == 302


ADMIN_PAGES = (
    "/admin/",
    "/admin/accounts/user/",
    "/admin/catalog/router/",
    "/admin/apikeys/apikey/",
)


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_staff_without_an_authenticator_are_sent_to_set_one_up(
    client, staff_without_mfa, settings, path
):
    settings.STAFF_REQUIRE_MFA = True
    client.post("/accounts/login/", {"login": staff_without_mfa.email, "password": PASSWORD})

    response = client.get(path)

    assert response.status_code == 302
    setup = response["Location"]
    assert setup.startswith("/accounts/2fa/totp/activate/")
    # allauth asks for the password again before a new authenticator, then shows the page.
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    page = client.get(setup)
    assert page.status_code == 200
    assert 'name="code"' in page.content.decode()


def test_once_set_up_the_admin_opens_and_asks_for_the_code_at_log_in(
    client, staff_without_mfa, settings
):
    settings.STAFF_REQUIRE_MFA = True
    client.post("/accounts/login/", {"login": staff_without_mfa.email, "password": PASSWORD})
    assert client.get("/admin/").status_code == 302

    secret = _with_totp(staff_without_mfa)

    assert client.get("/admin/").status_code == 200
    client.post("/admin/logout/")
    client.post("/accounts/login/", {"login": staff_without_mfa.email, "password": PASSWORD})
    assert client.get("/admin/").status_code == 302
    client.post("/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert client.get("/admin/").status_code == 200


def test_the_requirement_can_be_turned_off(client, staff_without_mfa, settings):
    settings.STAFF_REQUIRE_MFA = False
    client.force_login(staff_without_mfa)
    assert client.get("/admin/").status_code == 200


def test_customers_are_not_asked_for_an_authenticator(client, alice, settings):
    settings.STAFF_REQUIRE_MFA = True
    client.force_login(alice)
    assert client.get("/keys").status_code == 200


# --- passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["password1", "12345678901", "short7!", "weakling.alice", "qwertyuiop"],
    ids=["common", "numeric", "too-short", "like-the-email", "keyboard"],
)
def test_weak_passwords_are_refused_at_sign_up(client, plan, password):
    response = client.post(
        "/accounts/signup/",
        {"email": "weakling.alice@example.com", "password1": password, "password2": password},
    )

    assert response.status_code == 200  # the form again
    assert not User.objects.filter(email="weakling.alice@example.com").exists()
    assert "password" in response.content.decode().lower()


def test_a_strong_password_is_accepted(client, plan):
    strong = "violet tractor umbrella 42"
    response = client.post(
        "/accounts/signup/",
        {"email": "strong@example.com", "password1": strong, "password2": strong},
    )
    assert response.status_code == 302
    assert User.objects.filter(email="strong@example.com").exists()


def test_createsuperuser_says_an_authenticator_comes_next(db, settings):
    settings.STAFF_REQUIRE_MFA = True
    out = io.StringIO()
    call_command(
        "createsuperuser",
        "--noinput",
        "--email",
        "root@example.com",
        stdout=out,
    )

    assert User.objects.get(email="root@example.com").is_superuser
    assert "authenticator" in out.getvalue()
