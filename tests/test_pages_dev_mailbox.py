"""The dev mailbox: in DEBUG, mail goes to a file outbox and /dev/mail/ lists and opens it;
without DEBUG only staff see it, and only while the file outbox is the backend; anyone else
gets a 404."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core import mail

from accounts.templatetags.portal_format import relative

pytestmark = pytest.mark.django_db

FILEBASED = "django.core.mail.backends.filebased.EmailBackend"


@pytest.fixture
def outbox(settings, tmp_path):
    settings.EMAIL_BACKEND = FILEBASED
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    return tmp_path / "mail"


def _send(subject: str, body: str, to: str = "newcomer@example.com") -> None:
    mail.send_mail(subject, body, "noreply@localhost", [to])


def test_debug_lists_and_opens_messages(client, settings, outbox):
    settings.DEBUG = True
    _send("First", "Hello <b>there</b>: http://testserver/accounts/confirm-email/abc/")
    _send("Second", "Another one")
    listing = client.get("/dev/mail/")
    assert listing.status_code == 200
    body = listing.content.decode()
    assert body.index("Second") < body.index("First")  # newest first
    ids = [m.id for m in listing.context["mail"]]
    opened = client.get(f"/dev/mail/{ids[1]}/")
    assert opened.status_code == 200
    page = opened.content.decode()
    # The text is escaped (no raw HTML from a mail) and its link is clickable.
    assert "&lt;b&gt;there&lt;/b&gt;" in page and "<b>there</b>" not in page
    assert '<a href="http://testserver/accounts/confirm-email/abc/"' in page


def test_empty_outbox_says_so(client, settings, outbox):
    settings.DEBUG = True
    assert "No mail yet" in client.get("/dev/mail/").content.decode()


def test_unknown_or_traversing_ids_are_404(client, settings, outbox):
    settings.DEBUG = True
    _send("Hi", "x")
    for msg_id in ("nope-0", "..-0", "%2e%2e%2fetc%2fpasswd-0"):
        assert client.get(f"/dev/mail/{msg_id}/").status_code == 404


def test_without_debug_only_staff(client, settings, outbox, alice, staff):
    settings.DEBUG = False
    _send("Hi", "x")
    assert client.get("/dev/mail/").status_code == 404
    client.force_login(alice)
    assert client.get("/dev/mail/").status_code == 404
    client.force_login(staff)
    assert client.get("/dev/mail/").status_code == 200


def test_404_when_mail_is_really_sent(client, settings, staff):
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    client.force_login(staff)
    assert client.get("/dev/mail/").status_code == 404


def test_verification_page_links_to_the_mailbox_only_when_visible(client, settings, outbox, plan):
    settings.DEBUG = True
    form = {
        "email": "n@example.com",
        "password1": "a long passphrase 42",
        "password2": "a long passphrase 42",
    }
    page = client.post("/accounts/signup/", form, follow=True).content.decode()
    assert 'href="/dev/mail/"' in page
    assert len(list(outbox.iterdir())) == 1  # the confirmation mail went to the outbox
    settings.DEBUG = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.logout()
    form["email"] = "m@example.com"
    page = client.post("/accounts/signup/", form, follow=True).content.decode()
    assert "Verify your email address" in page and "/dev/mail/" not in page


def test_settings_default_to_the_file_outbox_in_debug(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.EMAIL_BACKEND)"
    )
    env = {"DEBUG": "1", "DJANGO_SETTINGS_MODULE": "portal.settings", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == FILEBASED
    env["EMAIL_URL"] = "console:"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().endswith("console.EmailBackend")


def test_relative_times():
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert relative(now + timedelta(seconds=42), now) == "in 42 s"
    assert relative(now + timedelta(hours=7, minutes=3), now) == "in 7 h"
    assert relative(now - timedelta(minutes=5), now) == "5 min ago"
    assert relative(now - timedelta(days=3), now) == "3 d ago"
    assert relative(now - timedelta(days=100), now) == "2026-08-19"
    assert relative(now, now) == "now"
