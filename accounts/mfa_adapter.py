"""allauth's MFA secrets (TOTP keys) encrypted at rest with Fernet.

The key is derived from MFA_SECRET (default: APIKEY_HASH_SECRET, itself defaulting to
SECRET_KEY); MFA_SECRET_FALLBACKS keeps older keys readable during a rotation (SECURITY.md).
"""

from __future__ import annotations

import base64
import functools
import hashlib

from allauth.mfa.adapter import DefaultMFAAdapter
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


def _fernet(secret: str) -> Fernet:
    digest = hashlib.sha256(b"cortensor-portal mfa:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


@functools.cache
def _cipher(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet(secret) for secret in secrets])


def cipher() -> MultiFernet:
    return _cipher((settings.MFA_SECRET, *settings.MFA_SECRET_FALLBACKS))


class MFAAdapter(DefaultMFAAdapter):
    def encrypt(self, text: str) -> str:
        return cipher().encrypt(text.encode()).decode()

    def decrypt(self, encrypted_text: str) -> str:
        return cipher().decrypt(encrypted_text.encode()).decode()
