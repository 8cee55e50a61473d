"""The shape of an API key: `ctsk_<public id>_<secret>`.

- `ctsk_` lets people and secret scanners recognise a Cortensor Portal key;
- the 12-character public id is safe to show (pages, admin, logs) and finds the record;
- the secret is 32 bytes from `secrets` (256 bits), shown once, stored only as an HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

from django.conf import settings

KEY_PREFIX = "ctsk_"
PUBLIC_ID_LENGTH = 12
SECRET_BYTES = 32
_SECRET_LENGTH = 43  # len(token_urlsafe(32))
KEY_LENGTH = len(KEY_PREFIX) + PUBLIC_ID_LENGTH + 1 + _SECRET_LENGTH
_PUBLIC_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(
    rf"^{KEY_PREFIX}([a-z0-9]{{{PUBLIC_ID_LENGTH}}})_([A-Za-z0-9_-]{{{_SECRET_LENGTH}}})$"
)


def new_public_id() -> str:
    return "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def new_key(public_id: str) -> str:
    return f"{KEY_PREFIX}{public_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_key(raw: str) -> str | None:
    """The public id of a well-formed key, or None: the cheap check before any lookup."""
    if len(raw) != KEY_LENGTH:
        return None
    match = _KEY_RE.match(raw)
    return match.group(1) if match else None


def _version(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def current_hash_version() -> str:
    return _version(settings.APIKEY_HASH_SECRET)


def _secret_for(version: str | None) -> str | None:
    """The hashing secret a stored hash was made with: the current one, the next one (phase 1
    of a rotation) or a fallback (an old one); None for a secret this process does not know."""
    current = settings.APIKEY_HASH_SECRET
    if not version or version == _version(current):
        return current
    for secret in (settings.APIKEY_HASH_SECRET_NEXT, *settings.APIKEY_HASH_SECRET_FALLBACKS):
        if secret and _version(secret) == version:
            return secret
    return None


def hash_key(raw: str, *, version: str | None = None) -> str:
    """HMAC-SHA256 of the whole key under the hashing secret named by `version` (default: the
    current one)."""
    secret = _secret_for(version)
    if secret is None:
        raise LookupError("no hashing secret of that version")
    return hmac.new(secret.encode(), raw.encode(), hashlib.sha256).hexdigest()


def key_matches(raw: str, stored_hash: str, version: str) -> bool:
    try:
        return hmac.compare_digest(hash_key(raw, version=version), stored_hash)
    except LookupError:
        return False


def needs_rehash(version: str) -> bool:
    """Move a key to the current secret on use, from an old one only. A key hashed with the
    next secret (made by a process already in phase 2 of a rotation) is left alone: moving it
    back would undo the rotation, key by key, in every process not yet restarted."""
    if version == current_hash_version():
        return False
    upcoming = settings.APIKEY_HASH_SECRET_NEXT
    return not (upcoming and version == _version(upcoming))
