"""Typed settings helpers: read the environment, fail at start with one clear line.

Every helper raises ConfigError naming the variable and what was wrong with it; manage.py,
wsgi.py and the Celery app turn that into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import os
from typing import overload
from urllib.parse import parse_qs, urlencode, urlparse

import dj_database_url
import dj_email_url
from dotenv import dotenv_values


class ConfigError(Exception):
    """A setting from the environment is missing or malformed."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use one of: 1/0, true/false, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def read_env_file(path: str | os.PathLike[str]) -> bool:
    """Load `path` (a .env file) into the environment, never over a variable already set.
    False when there is no such file (or `path` is empty: ENV_FILE= turns the file off)."""
    if not str(path) or not os.path.isfile(path):
        return False
    # environs' own read_env keeps the values inside its Env object; these go to os.environ
    # (as django-environ's read_env does) so that gunicorn.conf.py, Celery and the processes
    # a command starts see them too.
    try:
        values = dotenv_values(path)
    except Exception as exc:  # a malformed line: say which file, never echo its values
        raise ConfigError(f"{path} could not be read ({exc.__class__.__name__})") from None
    for name, value in values.items():
        if value is not None:
            os.environ.setdefault(name, value)
    return True


_DATABASE_SCHEMES = {"postgres", "postgresql", "pgsql", "sqlite"}


def database_from_env(name: str, *, default: str, base_dir: str) -> dict:
    """`postgres://user:pass@host:port/name?opt=v` or `sqlite:///path` -> a DATABASES entry,
    parsed by environs[django]'s dj-database-url; other engines are refused, and a relative
    SQLite path is taken from `base_dir`."""
    url = env_str(name) or default
    scheme = urlparse(url).scheme
    if scheme not in _DATABASE_SCHEMES:
        raise ConfigError(
            f"{name}={_redact(url)!r} is not understood: use postgres://user:pass@host:5432/db "
            "or sqlite:///path/to/file.sqlite3"
        )
    try:
        db: dict = dict(dj_database_url.parse(url))
    except ValueError:
        raise ConfigError(f"{name}={_redact(url)!r} is malformed (bad port or name?)") from None
    if db["ENGINE"] == "django.db.backends.sqlite3":
        path = db["NAME"]
        if not path or path == ":memory:":
            raise ConfigError(f"{name}={url!r} names no SQLite file")
        db["NAME"] = os.path.join(base_dir, path) if not os.path.isabs(path) else path
    elif not db.get("NAME"):
        raise ConfigError(f"{name}={_redact(url)!r} names no database (…/dbname)")
    db["PORT"] = str(db.get("PORT") or "")
    db.setdefault("OPTIONS", {})
    return db


def check_redis_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"REDIS_URL={_redact(url)!r} is not a redis://host:port/db URL")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"REDIS_URL={_redact(url)!r} has a bad port") from None
    return url


_EMAIL_ALIASES = {"locmem": "memory", "": "console"}


def email_from_env(name: str, default: str = "console:") -> dict:
    """`console:` (default), `locmem:`, `smtp://user:pass@host:587` (STARTTLS unless
    `?tls=0`) or `smtps://…:465` (implicit TLS), parsed by environs[django]'s dj-email-url."""
    url = env_str(name) or default
    parsed = urlparse(url)
    scheme = _EMAIL_ALIASES.get(parsed.scheme, parsed.scheme)
    if scheme not in {"console", "memory", "smtp", "smtps", "submission"}:
        raise ConfigError(f"{name}={_redact(url)!r} is not understood: use console:, or smtp://…")
    if scheme in {"smtp", "smtps"} and not parsed.hostname:
        raise ConfigError(f"{name}={_redact(url)!r} names no host")
    query = parse_qs(parsed.query)
    # Our contract, kept from before the library: smtp:// is STARTTLS on 587 unless ?tls=0,
    # smtps:// is implicit TLS on 465.
    if scheme == "smtps":
        query = {**query, "ssl": ["1"]}
    elif scheme == "smtp" and "ssl" not in query:
        query = {**query, "tls": [query.get("tls", ["1"])[-1]]}
    # (smtps:// goes to the library as smtp://…?ssl=1: its own smtps is deprecated.)
    rebuilt = parsed._replace(
        scheme="smtp" if scheme == "smtps" else scheme, query=urlencode(query, doseq=True)
    ).geturl()
    if scheme in {"console", "memory"}:
        rebuilt = f"{scheme}:"
    try:
        conf = dj_email_url.parse(rebuilt)
    except ValueError:
        raise ConfigError(f"{name}={_redact(url)!r} is malformed") from None
    if scheme in {"smtp", "smtps"}:
        ssl = scheme == "smtps" or query.get("ssl", ["0"])[-1] in _TRUE
        conf["EMAIL_USE_SSL"] = ssl
        conf["EMAIL_USE_TLS"] = not ssl and query.get("tls", ["1"])[-1] in _TRUE
        conf["EMAIL_PORT"] = parsed.port or (465 if ssl else 587)
    conf["EMAIL_HOST_USER"] = conf.get("EMAIL_HOST_USER") or ""
    conf["EMAIL_HOST_PASSWORD"] = conf.get("EMAIL_HOST_PASSWORD") or ""
    for key in ("EMAIL_FILE_PATH", "EMAIL_TIMEOUT"):
        conf.pop(key, None)
    if conf.get("EMAIL_HOST") is None:
        conf.pop("EMAIL_HOST", None)
        conf.pop("EMAIL_PORT", None)
    return conf


def _redact(url: str) -> str:
    """Never echo a password back in an error message."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
