"""Bad configuration stops start-up with a one-line explanation; good values are parsed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.env import ConfigError, database_from_env, email_from_env, env_bool, env_int

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "REDIS_CLUSTER",
            "CELERY_BROKER_URL",
            "SECRET_KEY",
            "DEBUG",
            "DJANGO_SETTINGS_MODULE",
        }
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


def test_redis_cluster_without_a_separate_celery_broker_stops_with_one_line():
    """Celery's Redis transport cannot use a cluster: its queues need a single Redis."""
    cluster = {"DEBUG": "1", "REDIS_URL": "redis://127.0.0.1:7101/0", "REDIS_CLUSTER": "1"}
    result = _manage("check", **cluster)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "CELERY_BROKER_URL" in result.stderr
    shown = "from django.conf import settings as s; print(s.REDIS_CLUSTER, s.CELERY_BROKER_URL)"
    result = _manage("shell", "-c", shown, CELERY_BROKER_URL="redis://127.0.0.1:6379/5", **cluster)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["True", "redis://127.0.0.1:6379/5"]


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


def _database(monkeypatch, url):
    monkeypatch.setenv("DATABASE_URL", url)
    return database_from_env("DATABASE_URL", default="sqlite:///unused", base_dir="/app")


def _email(monkeypatch, url):
    monkeypatch.setenv("EMAIL_URL", url)
    return email_from_env("EMAIL_URL")


def test_database_urls_parse(monkeypatch):
    pg = _database(monkeypatch, "postgres://user:p%40ss@db.example:6543/portal?sslmode=require")
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "portal",
        "user",
        "p@ss",
        "db.example",
        "6543",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert _database(monkeypatch, "sqlite:///var/db.sqlite3")["NAME"] == "/app/var/db.sqlite3"
    assert _database(monkeypatch, "sqlite:////tmp/x.db")["NAME"] == "/tmp/x.db"
    with pytest.raises(ConfigError):
        _database(monkeypatch, "postgres://host:5432/")
    with pytest.raises(ConfigError, match="not understood"):
        _database(monkeypatch, "mysql://u@h/db")  # dj-database-url knows it; we do not


def test_email_urls_parse(monkeypatch):
    smtp = _email(monkeypatch, "smtp://mailer:s%40cret@smtp.example:2525")
    assert smtp["EMAIL_HOST"] == "smtp.example" and smtp["EMAIL_PORT"] == 2525
    assert smtp["EMAIL_HOST_PASSWORD"] == "s@cret"
    assert (smtp["EMAIL_USE_TLS"], smtp["EMAIL_USE_SSL"]) == (True, False)
    assert _email(monkeypatch, "smtp://m@smtp.example?tls=0")["EMAIL_USE_TLS"] is False
    smtps = _email(monkeypatch, "smtps://m:p@smtp.example")
    assert (smtps["EMAIL_PORT"], smtps["EMAIL_USE_SSL"], smtps["EMAIL_USE_TLS"]) == (
        465,
        True,
        False,
    )
    ssl = _email(monkeypatch, "smtp://m:p@smtp.example?ssl=1")
    assert (ssl["EMAIL_PORT"], ssl["EMAIL_USE_SSL"], ssl["EMAIL_USE_TLS"]) == (465, True, False)
    with pytest.raises(ConfigError, match="malformed") as bad_port:
        _email(monkeypatch, "smtp://m:hunter2@smtp.example:port")
    assert "hunter2" not in str(bad_port.value)
    assert _email(monkeypatch, "console:")["EMAIL_BACKEND"].endswith("console.EmailBackend")
    assert _email(monkeypatch, "locmem:")["EMAIL_BACKEND"].endswith("locmem.EmailBackend")
    with pytest.raises(ConfigError):
        _email(monkeypatch, "carrier-pigeon://coop")


def test_a_dotenv_file_is_read_and_never_wins_over_the_environment(tmp_path):
    """manage.py in a second terminal sees what `make run` wrote to .env."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("DEBUG=1\nALLOWED_HOSTS=from-file.example\nSECRET_KEY=from-file\n")
    script = (
        "from django.conf import settings; "
        "print(settings.DEBUG, settings.ALLOWED_HOSTS, settings.SECRET_KEY)"
    )
    result = _manage("shell", "-c", script, ENV_FILE=str(dotenv), SECRET_KEY="from-env")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["True", "['from-file.example']", "from-env"]
    missing = _manage("check", ENV_FILE=str(tmp_path / "none"), DEBUG="0")
    assert "SECRET_KEY must be set" in missing.stderr


def test_a_development_secret_key_is_refused_with_debug_off():
    """A laptop .env (from .env.example or make run) copied to production stops start-up."""
    example = _manage("check", ENV_FILE=str(ROOT / ".env.example"), DEBUG="0")
    assert example.returncode == 2
    assert example.stderr.startswith("configuration error: SECRET_KEY is a development key")
    assert _manage("check", ENV_FILE=str(ROOT / ".env.example")).returncode == 0  # DEBUG=1


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
