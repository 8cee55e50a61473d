"""A served test runs what production runs: the same settings and gunicorn configuration as an
operator's process given only its stores and secrets, apart from what
`servehelpers.SERVED_DIFFERENCES` names (ports, database names, key prefix, secrets, plain HTTP
on loopback). Otherwise a served test could pass on a configuration nobody deploys (it once
ran the per-request usage writer, which production never uses with Redis)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from tests import servehelpers
from tests.routersim import REPO_ROOT, RouterSim
from tests.servehelpers import MODEL, Gunicorn, provision

pytestmark = pytest.mark.slow

_DUMP_SETTINGS = """
import json, django
from django.conf import settings
django.setup()
out = {}
for name in dir(settings):
    if name.isupper():
        value = getattr(settings, name)
        # a set's repr follows the process's hash seed: compare its members, sorted
        out[name] = repr(sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)
print(json.dumps(out))
"""

_DUMP_GUNICORN = """
import json, runpy
conf = runpy.run_path("gunicorn.conf.py")
print(json.dumps({k: repr(v) for k, v in conf.items() if not k.startswith("_") and not callable(v)
                  and k not in {"json", "logging", "os", "shutil", "tempfile", "time"}}))
"""


def _run(code: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings", "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _production_env(database_url: str) -> dict[str, str]:
    """What an operator sets for production (README, Operations): stores and a secret."""
    env = {name: os.environ[name] for name in servehelpers.SYSTEM_VARIABLES if name in os.environ}
    env.update(DATABASE_URL=database_url, SECRET_KEY="operator-secret")
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
        for name in ("REDIS_CLUSTER", "CELERY_BROKER_URL"):  # an operator's cluster settings
            if os.environ.get(name):
                env[name] = os.environ[name]
    else:
        env["ALLOW_LOCAL_STATE"] = "1"  # how an operator runs without Redis
    return env


# Settings that follow from the variables SERVED_DIFFERENCES allows.
_FOLLOWING = {
    "SECRET_KEY": ("SECRET_KEY",),
    "APIKEY_HASH_SECRET": ("APIKEY_HASH_SECRET", "MFA_SECRET"),
    "DATABASE_URL": ("DATABASE_URL", "DATABASES"),
    "CACHE_KEY_PREFIX": ("CACHES", "CELERY_BROKER_TRANSPORT_OPTIONS"),
    "STATIC_ROOT": ("STATIC_ROOT",),
    "USAGE_SPOOL_DIR": ("USAGE_SPOOL_DIR",),
    "SECURE_SSL_REDIRECT": ("SECURE_SSL_REDIRECT",),
    "SECURE_COOKIES": ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"),
}


@pytest.fixture(scope="module")
def served():
    sim = RouterSim()
    database_url, key = provision(sim, email="served-config@example.com")
    server = Gunicorn(database_url=database_url)
    yield server, key, database_url
    server.stop()
    sim.stop()


def test_a_served_process_gets_nothing_of_the_test_process_environment(served):
    server, _, _ = served
    test_only = {"PORTAL_TESTING", "USAGE_WRITE_BATCHED", "DJANGO_SETTINGS_MODULE", "DEBUG"}
    assert not test_only & set(server.env), test_only & set(server.env)
    named = set(servehelpers.SYSTEM_VARIABLES) | set(servehelpers.SERVED_DIFFERENCES)
    assert set(server.env) - named == {"WEB_CONCURRENCY"}


def test_served_settings_are_production_defaults_but_for_the_named_differences(served):
    server, _, database_url = served
    production = _run(_DUMP_SETTINGS, _production_env(database_url))
    served_settings = _run(_DUMP_SETTINGS, server.env)
    extra = set(server.env) - set(servehelpers.SYSTEM_VARIABLES) - {"WEB_CONCURRENCY"}
    allowed = extra & set(servehelpers.SERVED_DIFFERENCES)
    stores = {"REDIS_URL", "REDIS_CLUSTER", "CELERY_BROKER_URL"}
    assert extra == allowed | stores & extra, extra - allowed
    exempt = {name for variable in allowed for name in _FOLLOWING.get(variable, ())}
    differing = {
        name
        for name in production.keys() | served_settings.keys()
        if production.get(name) != served_settings.get(name)
    }
    assert differing <= exempt, {
        name: (production.get(name), served_settings.get(name)) for name in differing - exempt
    }
    # What the allowed differences may not hide: production's serving and metering shape.
    assert served_settings["DEBUG"] == "False"
    assert served_settings["TESTING"] == "False"
    assert served_settings["USAGE_WRITE_BATCHED"] == repr(bool(os.environ.get("REDIS_URL")))
    assert "ManifestStaticFilesStorage" in served_settings["STORAGES"]


def test_served_gunicorn_configuration_is_productions(served):
    server, _, database_url = served
    production = _run(_DUMP_GUNICORN, _production_env(database_url))
    served_conf = _run(_DUMP_GUNICORN, server.env)
    differing = {
        k for k in production.keys() | served_conf.keys() if production.get(k) != served_conf.get(k)
    }
    # The worker count is each test's choice; the socket is handed over with --bind fd://N.
    assert differing <= {"workers"}, differing
    assert "ApiErrorGeventWorker" in served_conf["worker_class"]


def test_served_pages_have_their_collected_static_files_and_v1_the_lean_stack(served):
    server, key, _ = served
    page = requests.get(f"{server.url}/accounts/login/", timeout=30)
    assert page.status_code == 200  # DEBUG off: a missing manifest entry would be a 500
    stylesheet = re.search(r'href="(/static/css/portal\.[0-9a-f]+\.css)"', page.text)
    assert stylesheet, "the page links the hashed file collectstatic made"
    assert requests.get(server.url + stylesheet[1], timeout=30).status_code == 200
    api = requests.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert api.status_code == 200 and MODEL in api.text
    # The page stack sets a CSP and varies on the session cookie; the /v1/ stack does neither.
    assert "Content-Security-Policy" in page.headers
    assert "Content-Security-Policy" not in api.headers
    assert "Cookie" not in api.headers.get("Vary", "")
