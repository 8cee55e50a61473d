"""`seed_demo` (what `make run` uses) converges to the same demo state however often it runs,
and the key it prints works."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Plan, User
from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate
from catalog.models import CatalogModel, Router
from portal.management.commands.seed_demo import ADMIN_PASSWORD, DEMO_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _development(settings):
    settings.DEBUG = True  # what `make run` sets; production is tested below


def _seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", "--router-url", "http://127.0.0.1:5010", *args, stdout=out)
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
    from core.errors import InvalidApiKey

    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=keys[0])  # the previous run's key was revoked


def test_quiet_prints_only_the_key():
    out = io.StringIO()
    call_command("seed_demo", "--quiet", stdout=out)
    assert re.fullmatch(r"ctsk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}\n", out.getvalue())


def test_refuses_with_debug_off_and_changes_nothing(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="--allow-production"):
        _seed()
    assert not User.objects.exists()
    assert not Plan.objects.exists() and not Router.objects.exists()


def test_in_production_the_passwords_come_from_the_environment(settings, monkeypatch):
    settings.DEBUG = False
    monkeypatch.setenv("SEED_ADMIN_PASSWORD", "an operator's own choice 2026")
    monkeypatch.delenv("SEED_DEMO_PASSWORD", raising=False)

    out = _seed("--allow-production")

    admin = User.objects.get(email="admin@example.com")
    assert admin.check_password("an operator's own choice 2026")
    assert not admin.check_password(ADMIN_PASSWORD)
    demo = User.objects.get(email="demo@example.com")
    assert not demo.check_password(DEMO_PASSWORD)
    generated = re.search(r"demo@example.com / (\S+)", out).group(1)
    assert len(generated) >= 20 and demo.check_password(generated)
    assert ADMIN_PASSWORD not in out and DEMO_PASSWORD not in out


def test_a_second_run_leaves_existing_passwords_alone(settings, monkeypatch):
    settings.DEBUG = False
    monkeypatch.delenv("SEED_ADMIN_PASSWORD", raising=False)
    first = _seed("--allow-production")
    generated = re.search(r"admin@example.com / (\S+)\)", first).group(1)

    second = _seed("--allow-production")

    assert "admin@example.com / (password unchanged)" in second
    assert User.objects.get(email="admin@example.com").check_password(generated)


def test_says_staff_must_set_up_mfa(settings):
    settings.STAFF_REQUIRE_MFA = True
    assert "authenticator" in _seed()
