"""One voice on every page: sentence case and "log in" (allauth's English is reworded in
locale/en/LC_MESSAGES/django.po), including its flash messages and confirmation mail."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from django.core import mail

pytestmark = pytest.mark.django_db

LOCALE = Path(__file__).resolve().parents[1] / "locale" / "en" / "LC_MESSAGES"
OFF_VOICE = re.compile(r"Sign In|Sign Up|Sign Out|sign in|signed in|Remember Me|Email Address")


def _visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)[\s\S]*?</\1>", "", html)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.parametrize(
    "path",
    ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/", "/accounts/logout/"],
)
def test_account_pages_speak_in_one_voice(client, path):
    text = _visible_text(client.get(path, follow=True).content.decode())
    assert not OFF_VOICE.search(text), OFF_VOICE.search(text).group(0)


def test_login_page_and_message(client, alice):
    page = client.get("/accounts/login/").content.decode()
    assert re.search(r"<h1>\s*Log in\s*</h1>", page)
    assert re.search(r'<button[^>]*type="submit"[^>]*>\s*Log in\s*</button>', page)
    assert "Remember me" in page
    response = client.post(
        "/accounts/login/",
        {"login": "alice@example.com", "password": "correct horse battery"},
        follow=True,
    )
    assert "Successfully logged in as alice@example.com." in response.content.decode()


def test_confirmation_mail_and_page(client, plan):
    form = {
        "email": "n@example.com",
        "password1": "a long passphrase 42",
        "password2": "a long passphrase 42",
    }
    client.post("/accounts/signup/", form)
    message = mail.outbox[-1]
    assert message.subject == "[Cortensor Portal] Confirm your email address"
    assert "for user" not in message.body
    assert "signed up on" in message.body
    link = re.search(r"http://[^/\s]+(/accounts/confirm-email/\S+/)", message.body).group(1)
    page = client.get(link).content.decode()
    assert "is an email address for user" not in page
    assert re.search(
        r"Confirm that <a href=\"mailto:n@example.com\">n@example.com</a> is your", page
    )
    assert re.search(r"<h1>\s*Confirm email address\s*</h1>", page)


def test_the_compiled_catalog_matches_its_source():
    """The .mo Django reads is built from the .po we edit (`make messages`)."""
    source = (LOCALE / "django.po").read_text(encoding="utf-8")
    with (LOCALE / "django.mo").open("rb") as handle:
        catalog = gettext.GNUTranslations(handle)
    pairs = re.findall(r'^msgid ((?:".*"\n)+)msgstr ((?:".*"\n)+)', source, flags=re.M)
    checked = 0
    for raw_id, raw_str in pairs:
        msgid = "".join(re.findall(r'"(.*)"', raw_id)).replace('\\"', '"')
        msgstr = "".join(re.findall(r'"(.*)"', raw_str)).replace('\\"', '"')
        if msgid:
            assert catalog.gettext(msgid) == msgstr, msgid
            checked += 1
    assert checked > 80


def test_favicon_and_touch_icon(client):
    page = client.get("/accounts/login/").content.decode()
    for rel, name in [
        ("icon", "icons/favicon.ico"),
        ("icon", "icons/favicon.svg"),
        ("apple-touch-icon", "icons/apple-touch-icon.png"),
    ]:
        assert re.search(rf'<link rel="{rel}" href="/static/{name}"', page), name
    for path, name in [
        ("/favicon.ico", "icons/favicon.ico"),
        ("/apple-touch-icon.png", "icons/apple-touch-icon.png"),
    ]:
        response = client.get(path)
        assert response.status_code == 301 and response["Location"] == f"/static/{name}"
        assert client.get(response["Location"]).status_code == 200
