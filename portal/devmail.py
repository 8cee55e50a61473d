"""The dev mailbox: reads the file outbox that Django's filebased email backend writes (DEBUG,
`make run`) and shows it at /dev/mail/, the way Mailpit or letter_opener do.

The page exists only where it can help and cannot leak: with DEBUG on, or for staff, and only
while the filebased backend is the one sending mail. Anyone else gets a plain 404.

The backend writes one file per connection, its messages separated by a line of 79 dashes.
A message's id is "<file name>-<index>"; file names are taken only from the outbox's own
listing, never joined from the URL, so no path can escape the folder.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.http import Http404
from django.shortcuts import render

FILEBASED = "django.core.mail.backends.filebased.EmailBackend"
SEPARATOR = b"\n" + b"-" * 79 + b"\n"
MAX_MESSAGES = 200


@dataclass(frozen=True)
class Message:
    id: str
    subject: str
    sender: str
    to: str
    date: datetime
    text: str
    html: str


def mailbox_enabled() -> bool:
    return settings.EMAIL_BACKEND == FILEBASED and bool(settings.EMAIL_FILE_PATH)


def mailbox_visible(user) -> bool:
    return mailbox_enabled() and (settings.DEBUG or bool(getattr(user, "is_staff", False)))


def _parse(msg_id: str, raw: bytes, fallback: datetime) -> Message:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    try:
        date = parsed["Date"].datetime.astimezone(UTC) if parsed["Date"] else fallback
    except (AttributeError, TypeError, ValueError):
        date = fallback
    return Message(
        id=msg_id,
        subject=str(parsed["Subject"] or "(no subject)"),
        sender=str(parsed["From"] or ""),
        to=str(parsed["To"] or ""),
        date=date,
        text=text_part.get_content() if text_part else "",
        html=html_part.get_content() if html_part else "",
    )


def messages_list() -> list[Message]:
    """Every message in the outbox, newest first (at most MAX_MESSAGES)."""
    folder = Path(settings.EMAIL_FILE_PATH)
    if not folder.is_dir():
        return []
    found: list[Message] = []
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix == ".log"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in files:
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        chunks = [c for c in path.read_bytes().split(SEPARATOR) if c.strip()]
        for index, raw in reversed(list(enumerate(chunks))):
            found.append(_parse(f"{path.stem}-{index}", raw.lstrip(b"\n"), mtime))
            if len(found) >= MAX_MESSAGES:
                return found
    return sorted(found, key=lambda m: m.date, reverse=True)


def dev_mailbox(request):
    if not mailbox_visible(request.user):
        raise Http404("No dev mailbox here.")
    return render(request, "dev/mailbox.html", {"mail": messages_list()})


def dev_message(request, msg_id: str):
    if not mailbox_visible(request.user):
        raise Http404("No dev mailbox here.")
    for message in messages_list():
        if message.id == msg_id:
            return render(request, "dev/message.html", {"message": message})
    raise Http404("No such message.")
