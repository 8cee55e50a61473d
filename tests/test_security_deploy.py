"""Production settings pass `manage.py check --deploy` with no warning, and answer with the
security headers and cookie flags they promise.

Each test starts a fresh process with a production environment (DEBUG off, a long random
SECRET_KEY, ALLOWED_HOSTS set, nothing of portal.test_settings), because settings are read
once at import.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What portal.test_settings (and the browser tests' DJANGO_ALLOW_ASYNC_UNSAFE) put in this
# process's environment: not production.
TEST_ONLY = {
    "SECURE_SSL_REDIRECT",
    "SECURE_COOKIES",
    "PORTAL_TESTING",
    "EMAIL_URL",
    "LOG_FORMAT",
    "CACHE_KEY_PREFIX",
    "DEBUG",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_PRELOAD",
    "BEHIND_TLS_PROXY",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "DJANGO_SETTINGS_MODULE",
}


def production_env(**overrides: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in TEST_ONLY}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "APIKEY_HASH_SECRET": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "portal.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
        }
    )
    env.update(overrides)
    return env


def check_deploy(**overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=production_env(**overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean():
    result = check_deploy()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output, output


def test_check_deploy_would_catch_a_weak_setup():
    """The clean run above is not vacuous: the same command flags a weak production setup."""
    result = check_deploy(SECRET_KEY="short", SECURE_COOKIES="0", SECURE_SSL_REDIRECT="0")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for check in ("security.W009", "security.W012", "security.W016", "security.W008"):
        assert check in output, output


PROBE = textwrap.dedent("""
    import json, django
    django.setup()
    from django.conf import settings
    from django.test import Client

    client = Client(HTTP_HOST="portal.example.com")
    plain = client.get("/v1/models")
    secure = client.get("/healthz", secure=True)
    proxied = client.get("/v1/models", HTTP_X_FORWARDED_PROTO="https")
    print(json.dumps({
        "redirect": [plain.status_code, plain.get("Location")],
        "headers": {k: secure.get(k) for k in ("Strict-Transport-Security",
                    "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options",
                    "Cross-Origin-Opener-Policy")},
        "proxied": proxied.status_code,
        "settings": {k: getattr(settings, k) for k in ("SESSION_COOKIE_SECURE",
                     "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SECURE_SSL_REDIRECT",
                     "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "DEBUG",
                     "SILENCED_SYSTEM_CHECKS", "AUTH_PASSWORD_VALIDATORS")},
        "middleware": settings.MIDDLEWARE,
    }))
""")


def probe(**overrides: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=production_env(**overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_answers_with_the_security_headers():
    seen = probe(BEHIND_TLS_PROXY="1")

    assert seen["redirect"] == [301, "https://portal.example.com/v1/models"]
    assert seen["headers"] == {
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    # Behind the TLS proxy, its X-Forwarded-Proto is trusted: no redirect loop, the API answers.
    assert seen["proxied"] == 401
    settings = seen["settings"]
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["CSRF_COOKIE_SECURE"] is True
    assert settings["SESSION_COOKIE_HTTPONLY"] is True
    assert settings["DEBUG"] is False
    assert settings["SILENCED_SYSTEM_CHECKS"] == []
    assert len(settings["AUTH_PASSWORD_VALIDATORS"]) >= 4
    middleware = seen["middleware"]
    assert "portal.csp.ContentSecurityPolicyMiddleware" in middleware
    assert "django.middleware.csrf.CsrfViewMiddleware" in middleware
    # The guard runs before sessions and CSRF read anything of the request.
    guard = middleware.index("core.api_guard.ApiGuardMiddleware")
    assert guard < middleware.index("django.contrib.sessions.middleware.SessionMiddleware")


def test_without_the_proxy_setting_forwarded_proto_is_not_trusted():
    seen = probe()
    assert seen["proxied"] == 301  # a client cannot claim HTTPS by sending the header itself
