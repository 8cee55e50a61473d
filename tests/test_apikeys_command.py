"""`manage.py apikey_create`: only the key on stdout, users and plans handled, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management import CommandError, call_command

from accounts.models import Plan, User
from accounts.selectors import personal_org
from apikeys import keyformat
from apikeys.models import ApiKey, ApiKeyEvent


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("apikey_create", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_stdout_is_exactly_the_key_and_a_newline(alice):
    out, err = run("--email", "alice@example.com", "--name", "ci")

    raw = out.removesuffix("\n")
    assert out == raw + "\n"
    key = ApiKey.objects.get(owner=alice)
    assert keyformat.parse_key(raw) == key.public_id
    assert keyformat.key_matches(raw, key.secret_hash, key.hash_version)
    assert key.name == "ci"
    assert key.display_prefix in err
    assert raw not in err


def test_the_event_names_the_command(alice):
    run("--email", "alice@example.com", "--name", "ci")

    event = ApiKeyEvent.objects.get(key__owner=alice)
    assert (event.kind, event.actor_id, event.actor_label) == (
        "created",
        None,
        "manage.py apikey_create",
    )


def test_missing_user_is_an_error_without_create_user(db):
    with pytest.raises(CommandError, match="--create-user"):
        run("--email", "carol@example.com", "--name", "ci")
    assert not User.objects.filter(email="carol@example.com").exists()


def test_create_user_makes_a_verified_user_without_a_password(plan):
    out, err = run("--email", "Carol@Example.com", "--name", "ci", "--create-user")

    carol = User.objects.get(email="carol@example.com")
    assert not carol.has_usable_password()
    assert personal_org(carol).plan == plan  # the default plan
    address = EmailAddress.objects.get(user=carol)
    assert (address.email, address.verified, address.primary) == ("carol@example.com", True, True)
    assert ApiKey.objects.get(owner=carol).public_id == keyformat.parse_key(out.strip())
    assert "Created user" in err


def test_plan_puts_the_user_on_that_plan(alice):
    pro = Plan.objects.create(name="pro")

    run("--email", "alice@example.com", "--name", "ci", "--plan", "pro")

    alice.refresh_from_db()
    assert personal_org(alice).plan == pro


def test_plan_applies_to_a_created_user(plan):
    Plan.objects.create(name="pro")

    run("--email", "dave@example.com", "--name", "ci", "--plan", "pro", "--create-user")

    assert personal_org(User.objects.get(email="dave@example.com")).plan.name == "pro"


def test_unknown_plan_is_an_error_and_changes_nothing(alice):
    with pytest.raises(CommandError, match="No plan named 'gold'"):
        run("--email", "alice@example.com", "--name", "ci", "--plan", "gold")
    assert not ApiKey.objects.exists()


def test_blank_name_is_an_error(alice):
    with pytest.raises(CommandError, match="name"):
        run("--email", "alice@example.com", "--name", "   ")
    assert not ApiKey.objects.exists()


def test_as_a_process_stdout_has_only_the_key_and_errors_exit_non_zero(tmp_path):
    """The real command line, on a throwaway SQLite database of its own."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL"}}  # fmt: skip
    env.update(
        DJANGO_SETTINGS_MODULE="portal.test_settings",
        LOG_LEVEL="INFO",
        DATABASE_URL=f"sqlite:///{tmp_path / 'cmd.sqlite3'}",
    )

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            env=env,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert manage("migrate", "--noinput", "-v", "0").returncode == 0
    ok = manage("apikey_create", "--email", "ops@example.com", "--name", "ci", "--create-user")
    missing = manage("apikey_create", "--email", "nobody@example.com", "--name", "ci")

    assert ok.returncode == 0, ok.stderr
    assert keyformat.parse_key(ok.stdout.removesuffix("\n")) is not None
    assert ok.stdout.count("\n") == 1
    assert "api key created" in ok.stderr  # the service's log line went to stderr
    assert missing.returncode != 0
    assert missing.stdout == ""
    assert "--create-user" in missing.stderr
