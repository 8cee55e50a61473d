"""`seed_demo` (what `make run` uses) converges to the same demo state however often it runs,
and the key it prints works."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from accounts.models import Plan, User
from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate
from catalog.models import CatalogModel, Router

pytestmark = pytest.mark.django_db


def _seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", "--router-url", "http://127.0.0.1:5010", stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_prints_a_working_key():
    first, second = _seed(), _seed()
    assert User.objects.filter(email="demo@example.com", is_staff=False).count() == 1
    assert User.objects.get(email="admin@example.com").is_staff
    assert Plan.objects.get(is_default=True).name == "free"
    assert CatalogModel.objects.count() == 2 and Router.objects.count() == 1
    demo_keys = ApiKey.objects.filter(owner__email="demo@example.com")
    assert demo_keys.count() == 2 and demo_keys.active().count() == 1
    keys = [re.search(r"API key\s+(\S+)", text).group(1) for text in (first, second)]
    assert f"Bearer {keys[1]}" in second and "curl" in second
    assert apikey_authenticate(raw_key=keys[1]).owner_email == "demo@example.com"
    from portal.errors import InvalidApiKey

    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=keys[0])  # the previous run's key was revoked


def test_quiet_prints_only_the_key():
    out = io.StringIO()
    call_command("seed_demo", "--quiet", stdout=out)
    assert re.fullmatch(r"ctsk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}\n", out.getvalue())
