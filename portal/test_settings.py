"""Settings for the test suite: the same settings module, with fast and local defaults.

DATABASE_URL and REDIS_URL still come from the environment, so CI runs this on PostgreSQL and
Redis while a laptop runs it on SQLite and local memory.

Each run has its own id (PORTAL_TEST_RUN_ID, inherited by the processes it starts): its Redis
keys carry it in their prefix and its PostgreSQL databases in their names, so two runs on one
machine, on the same Redis database and server, never touch each other's state.

Under pytest-xdist each worker is a run of its own: the controller makes the id, each worker
(PYTEST_XDIST_WORKER, e.g. gw1) appends its name to it and to the key prefix it inherited, so
workers share no keys, databases or folders with each other or with another run's workers.
"""

import os
import tempfile
import uuid
from pathlib import Path

RUN_ID = os.environ.setdefault("PORTAL_TEST_RUN_ID", uuid.uuid4().hex[:8])
# A worker's own processes (a subprocess with this module as its settings) inherit both the
# worker's id and PYTEST_XDIST_WORKER: the suffix goes on once.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER and not RUN_ID.endswith(f"_{XDIST_WORKER}"):
    RUN_ID = os.environ["PORTAL_TEST_RUN_ID"] = f"{RUN_ID}_{XDIST_WORKER}"
    if "CACHE_KEY_PREFIX" in os.environ:  # the controller's (or the caller's) prefix
        os.environ["CACHE_KEY_PREFIX"] += f"_{XDIST_WORKER}"

# A developer's .env (written by `make run`) must not change what the suite tests; processes
# the suite starts inherit this. Tests of the file itself set ENV_FILE explicitly.
os.environ.setdefault("ENV_FILE", "")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("APIKEY_HASH_SECRET", "test-apikey-hash-secret")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SECURE_COOKIES", "0")
os.environ.setdefault("EMAIL_URL", "locmem:")
os.environ.setdefault("LOG_FORMAT", "text")
os.environ.setdefault("PORTAL_TESTING", "1")
os.environ.setdefault("CACHE_KEY_PREFIX", f"portal-test-{RUN_ID}")
# The test process is one process, so local state is fine without REDIS_URL. Served tests on
# the embedded default inherit this: their gunicorns run workers with local state on purpose.
os.environ.setdefault("ALLOW_LOCAL_STATE", "1")
# Tests in this process read records right after a response. Served processes (gunicorn,
# tests/servehelpers.py) do not inherit this: they run production's batched writer.
os.environ.setdefault("USAGE_WRITE_BATCHED", "0")

from portal.settings import *  # noqa: E402, F403

DEBUG = False
CATALOG_CHECK_SECONDS = 0.0
# Pages render without a collectstatic manifest in tests.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# The usage spool's folder, this run's own: a drain moves every file of its folder into its own
# database, another run's (or worker's) records too if they shared one.
if not os.environ.get("USAGE_SPOOL_DIR"):
    USAGE_SPOOL_DIR = Path(tempfile.gettempdir()) / f"portal-usage-spool-{RUN_ID}"

# pytest-django's test database, named for this run (dropped by pytest-django at the end).
# Under xdist pytest-django appends the worker's name itself: test_<name>_<run id>_gw1.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    _run = RUN_ID.removesuffix(f"_{XDIST_WORKER}") if XDIST_WORKER else RUN_ID
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{_run}"}  # noqa: F405

# A "replica" alias that mirrors the test database (Django's TEST MIRROR), so the replica router
# can be tested everywhere; it stays off (READ_REPLICA None) unless a test switches it on.
# No pool of its own: its connections close with it, so the test database can be dropped.
if "replica" not in DATABASES:  # noqa: F405
    _primary = DATABASES["default"]  # noqa: F405
    DATABASES["replica"] = {  # noqa: F405
        **_primary,
        "OPTIONS": {k: v for k, v in _primary["OPTIONS"].items() if k != "pool"},
        "TEST": {"MIRROR": "default"},
    }
