"""A revoke in one process is seen by the very next request of another process.

Two processes share keys only through the cache and the database, so this runs only on the
production shape (REDIS_URL and PostgreSQL): the embedded default is one process with a
local-memory cache and an in-memory test database another process cannot open.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from urllib.parse import quote

import pytest
from django.conf import settings

from accounts.models import User
from accounts.services import users_set_active
from apikeys.models import ApiKey
from apikeys.services import apikey_create, apikey_revoke

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="needs REDIS_URL: without a shared cache the embedded default is one process",
    ),
]

WORKER = textwrap.dedent(
    """
    import sys

    import django

    django.setup()

    from apikeys.services import apikey_authenticate
    from core.errors import ApiError

    for line in sys.stdin:
        try:
            apikey_authenticate(raw_key=line.strip())
        except ApiError as exc:
            print(exc.code, flush=True)
        else:
            print("ok", flush=True)
    """
)


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): another process cannot open this test db")
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    def __init__(self):
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="portal.test_settings",
            DATABASE_URL=_test_database_url(),
            REDIS_URL=os.environ["REDIS_URL"],
            CACHE_KEY_PREFIX=settings.CACHES["default"]["KEY_PREFIX"],
            APIKEY_HASH_SECRET=settings.APIKEY_HASH_SECRET,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], env=env, cwd=settings.BASE_DIR, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def authenticate(self, raw: str) -> str:
        self.proc.stdin.write(raw + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise AssertionError(f"worker died: {self.proc.stderr.read()}")
        return answer

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.mark.django_db(transaction=True)
def test_the_other_process_refuses_the_key_on_its_very_next_request(alice, worker):
    key, raw = apikey_create(owner=alice, name="shared")
    assert worker.authenticate(raw) == "ok"  # the worker has loaded and cached the entry
    assert worker.authenticate(raw) == "ok"

    apikey_revoke(key=key, actor=alice)

    assert worker.authenticate(raw) == "invalid_api_key"


@pytest.mark.django_db(transaction=True)
def test_the_other_process_refuses_keys_of_a_deactivated_user(alice, worker):
    _, raw = apikey_create(owner=alice, name="shared")
    assert worker.authenticate(raw) == "ok"

    alice.is_active = False
    alice.save()

    assert worker.authenticate(raw) == "invalid_api_key"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "delete",
    [
        pytest.param(lambda key: key.delete(), id="the admin's delete"),
        pytest.param(lambda key: ApiKey.objects.filter(pk=key.pk).delete(), id="delete selected"),
        pytest.param(lambda key: key.owner.delete(), id="deleting the owner"),
    ],
)
def test_the_other_process_refuses_a_deleted_key(alice, worker, delete):
    key, raw = apikey_create(owner=alice, name="shared")
    assert worker.authenticate(raw) == "ok"  # cached as valid in the shared cache

    delete(key)

    assert worker.authenticate(raw) == "invalid_api_key"


@pytest.mark.django_db(transaction=True)
def test_the_other_process_refuses_keys_of_a_suspended_user_and_takes_them_back(alice, worker):
    _, raw = apikey_create(owner=alice, name="shared")
    assert worker.authenticate(raw) == "ok"

    users_set_active(users=User.objects.filter(pk=alice.pk), active=False)
    assert worker.authenticate(raw) == "invalid_api_key"

    users_set_active(users=User.objects.filter(pk=alice.pk), active=True)
    assert worker.authenticate(raw) == "ok"
