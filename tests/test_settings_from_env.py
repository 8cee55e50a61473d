"""Bad configuration stops start-up with a one-line explanation; good values are parsed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.env import ConfigError, env_bool, env_int, parse_database_url, parse_email_url

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_off_without_secret_key_stops_with_one_line():
    result = _manage("check", DEBUG="0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: SECRET_KEY must be set when DEBUG is "
        "off (set DEBUG=1 for development)"
    )


def test_malformed_database_url_stops_with_one_line():
    result = _manage("check", DEBUG="1", DATABASE_URL="mysql://nope")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "DATABASE_URL" in result.stderr and "not understood" in result.stderr


def test_password_never_echoed_in_errors():
    result = _manage("check", DEBUG="1", DATABASE_URL="postgres://u:hunter2@h:notaport/db")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr


def test_bad_boolean_and_integer_name_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ConfigError, match="DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "lots")
    with pytest.raises(ConfigError, match="DB_POOL_MAX_SIZE"):
        env_int("DB_POOL_MAX_SIZE", 8)


def test_database_urls_parse():
    pg = parse_database_url(
        "postgres://user:p%40ss@db.example:6543/portal?sslmode=require", base_dir="/app"
    )
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "portal",
        "user",
        "p@ss",
        "db.example",
        "6543",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert (
        parse_database_url("sqlite:///var/db.sqlite3", base_dir="/app")["NAME"]
        == "/app/var/db.sqlite3"
    )
    assert parse_database_url("sqlite:////tmp/x.db", base_dir="/app")["NAME"] == "/tmp/x.db"
    with pytest.raises(ConfigError):
        parse_database_url("postgres://host:5432/", base_dir="/app")


def test_email_urls_parse():
    smtp = parse_email_url("smtp://mailer:secret@smtp.example:2525")
    assert smtp["EMAIL_HOST"] == "smtp.example" and smtp["EMAIL_PORT"] == 2525
    assert smtp["EMAIL_USE_TLS"] is True
    assert parse_email_url("console:")["EMAIL_BACKEND"].endswith("console.EmailBackend")
    with pytest.raises(ConfigError):
        parse_email_url("carrier-pigeon://coop")


def test_ci_runs_on_the_real_services():
    """When CI asks for PostgreSQL and Redis, the suite must not have fallen back."""
    if not os.environ.get("PORTAL_REQUIRE_SERVICES"):
        pytest.skip("only enforced when PORTAL_REQUIRE_SERVICES is set (CI)")
    from django.conf import settings

    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.REDIS_URL and "redis" in settings.CACHES["default"]["BACKEND"].lower()


# --- production without Redis ---------------------------------------------------------------

PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "x" * 50}


def _manage_without_local_state(*args, **env):
    """_manage, without the ALLOW_LOCAL_STATE=1 that portal.test_settings gives this process."""
    saved = os.environ.pop("ALLOW_LOCAL_STATE", None)
    try:
        return _manage(*args, **env)
    finally:
        if saved is not None:
            os.environ["ALLOW_LOCAL_STATE"] = saved


@pytest.mark.parametrize("workers", [None, "2", "8"])
def test_several_workers_without_redis_stop_with_one_line(workers):
    env = dict(PRODUCTION)
    if workers:
        env["WEB_CONCURRENCY"] = workers
    else:
        env["WEB_CONCURRENCY"] = ""  # unset: gunicorn's default of 2
    result = _manage_without_local_state("check", **env)

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("configuration error: REDIS_URL must be set")
    assert "ALLOW_LOCAL_STATE=1" in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"WEB_CONCURRENCY": "1"},
        {"WEB_CONCURRENCY": "4", "ALLOW_LOCAL_STATE": "1"},
        {"WEB_CONCURRENCY": "4", "DEBUG": "1"},
        {"WEB_CONCURRENCY": "4", "REDIS_URL": "redis://127.0.0.1:6379/1"},
    ],
    ids=["one-worker", "explicit-local-state", "debug", "redis"],
)
def test_one_process_or_redis_or_an_explicit_opt_in_start(env):
    result = _manage_without_local_state("check", **{**PRODUCTION, **env})
    assert result.returncode == 0, result.stderr


def test_gunicorn_refuses_to_serve_several_workers_without_redis(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "ALLOW_LOCAL_STATE", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith("PYTEST")
    }
    env.update(PRODUCTION, WEB_CONCURRENCY="2", HOST="127.0.0.1", PORT="0")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    result = subprocess.run(
        [str(gunicorn), "-c", "gunicorn.conf.py", "portal.wsgi:application"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "configuration error: REDIS_URL must be set" in result.stderr
