"""Shared fixtures. Personas: alice (a customer with keys), bob (another customer, who must
never see alice's things), staff (an operator). The catalog points at a real router simulator
over HTTP; nothing on the request path is mocked."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import pytest
from django.core.cache import cache

from tests import durations, rediscluster, servehelpers
from tests.routersim import RouterSim

_CLUSTER_STARTED = pytest.StashKey[list]()


def pytest_sessionstart(session):
    """With REDIS_CLUSTER=1 (`make test-cluster`) the run's REDIS_URL is a node of the local
    3-master cluster: reused if it runs (CI starts it), else started for this session. By the
    run's own process (an xdist run's controller, before any worker starts): a worker that
    started it would stop it at its end under the workers still running."""
    if rediscluster.enabled() and not os.environ.get("PYTEST_XDIST_WORKER"):
        session.config.stash[_CLUSTER_STARTED] = rediscluster.ensure()


def pytest_sessionfinish(session):
    started = session.config.stash.get(_CLUSTER_STARTED, [])
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=30)


@functools.cache
def _run_redis():
    """This run's Redis (the environment's, whatever a test's settings say) and its prefix."""
    return rediscluster.client_for_env(), os.environ["CACHE_KEY_PREFIX"]


def _clear_shared_state() -> None:
    """Empty this run's cache and limit counters: on Redis only the keys under this run's
    prefix (other runs and processes share the Redis database), else the local memory."""
    if os.environ.get("REDIS_URL"):
        client, prefix = _run_redis()
        servehelpers.delete_prefix(client, prefix)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty shared cache (Redis in CI, local memory otherwise)."""
    _clear_shared_state()
    from apikeys import cache as apikey_cache
    from apikeys import services as apikey_services
    from catalog import routing
    from metering import limits

    routing._table = None
    limits._backends.clear()  # the in-process limits of the embedded default
    apikey_services._last_used_local.clear()
    apikey_cache._local.drop(None)  # the entries this process read (their Redis copies are gone)
    yield
    _clear_shared_state()


# What the post_migrate signal after a flush makes again from the models, row for row: the
# content types and their permissions. No test adds or changes one.
_REMADE_AFTER_FLUSH = frozenset({"django_content_type", "auth_permission"})


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete():
    """A transactional test (live_server, transaction=True) empties every table after itself:
    Django's flush, on PostgreSQL one TRUNCATE of all of them, the usage records' monthly
    partitions with them. That makes a new file for each table, partition and index, ~0.2 s
    (0.09 s of the server's CPU) per test for tables holding a few rows. DELETE empties them
    alike in a few ms: no table has a DELETE trigger, and every foreign key is deferrable
    (Django's), so deferred they are checked once, at the flush's commit, with every row gone;
    one that is not fails the flush loudly. Sequences go on either way (no RESTART IDENTITY);
    a flush that resets them or cascades (available_apps) keeps Django's TRUNCATE.

    The content types and permissions stay: the post_migrate signal after the flush would make
    the same rows again (~30 ms of this process's CPU per test), and now finds them there."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if not tables or reset_sequences or allow_cascade:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        deletes = [
            f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};"
            for table in tables
            if table not in _REMADE_AFTER_FLUSH
        ]
        return [f"{style.SQL_KEYWORD('SET CONSTRAINTS ALL DEFERRED')};", *deletes]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", sql_flush)
        yield


@pytest.fixture(scope="session", autouse=True)
def _served_cleanup():
    """Served processes' database, static files and Redis keys go when the run ends, and the
    test process's own spool folder (portal/test_settings.py: one per run) with them."""
    yield
    servehelpers.cleanup()
    from django.conf import settings

    if str(settings.USAGE_SPOOL_DIR).startswith(tempfile.gettempdir()):
        shutil.rmtree(settings.USAGE_SPOOL_DIR, ignore_errors=True)


@pytest.fixture
def plan(db):
    from accounts.models import Plan

    return Plan.objects.create(
        name="free",
        is_default=True,
        requests_per_minute=1000,
        tokens_per_minute=1_000_000,
        max_concurrent_requests=50,
    )


@pytest.fixture
def make_user(db, plan):
    from accounts.models import User

    def make(
        email: str,
        *,
        password: str = "correct horse battery",
        staff: bool = False,
        verified: bool = True,
        plan_=None,
    ):
        user = User.objects.create_user(
            email=email, password=password, is_staff=staff, is_superuser=staff, plan=plan_ or plan
        )
        if verified:
            from allauth.account.models import EmailAddress

            EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice@example.com")


@pytest.fixture
def bob(make_user):
    return make_user("bob@example.com")


@pytest.fixture
def staff(make_user):
    """An operator as production has them: staff with an authenticator app, since
    STAFF_REQUIRE_MFA keeps staff without one out of the admin. `staff.totp_secret` makes
    codes for logging in."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    user = make_user("staff@example.com", staff=True)
    user.totp_secret = generate_totp_secret()
    TOTP.activate(user, user.totp_secret)
    return user


@pytest.fixture
def staff_without_mfa(make_user):
    return make_user("new-staff@example.com", staff=True)


@pytest.fixture
def make_key():
    from apikeys.services import apikey_create

    def make(owner, name: str = "test key", **kwargs):
        return apikey_create(owner=owner, name=name, **kwargs)

    return make


@pytest.fixture
def alice_key(alice, make_key):
    """(ApiKey, raw secret) for alice."""
    return make_key(alice, "alice's key")


@pytest.fixture(scope="session")
def router_sim():
    sim = RouterSim("--sessions", "1,2")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def module_sims():
    """Two router simulators for a test module, shared by its tests (starting one is an
    interpreter importing gevent, most of what such a test took)."""
    first, second = RouterSim("--sessions", "1"), RouterSim("--sessions", "1")
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def sims(module_sims):
    """Two router simulators, both answering when the test starts (a test may stop one: it
    comes back on the same port for the next)."""
    for sim in module_sims:
        sim.start()
    return module_sims


@pytest.fixture
def catalog(db, router_sim):
    """A pool with one router (the simulator) and two public models."""
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name="default")
    router = Router.objects.create(
        pool=pool,
        base_url=router_sim.url,
        api_version="v1",
        session_id=1,
        token="default-dev-token",
    )
    llama = CatalogModel.objects.create(
        public_id="cortensor/llama-3.1-8b",
        pool=pool,
        display_name="Llama 3.1 8B",
        chat_template="llama3",
        max_tokens=1024,
        default_max_tokens=64,
    )
    qwen = CatalogModel.objects.create(
        public_id="cortensor/qwen-2.5-7b",
        pool=pool,
        display_name="Qwen 2.5 7B",
        chat_template="chatml",
        max_tokens=1024,
        default_max_tokens=64,
    )
    return {"pool": pool, "router": router, "llama": llama, "qwen": qwen}


def pytest_collection_modifyitems(items):
    """A test on a served portal (a `served` fixture: gunicorn in a subprocess) is slow.

    In an xdist worker, the longest modules come first (tests/durations.py): `make test`
    hands whole modules out in this order. Every worker sorts alike, as xdist requires."""
    for item in items:
        if "served" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        seconds = durations.module_seconds()
        # stable: a module's own tests, and modules of equal weight, keep their order
        items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))


@pytest.fixture
def unanswered_port():
    """A port whose connections are never accepted: its backlog is full, so a new connection's
    handshake gets no answer and the client's connect waits out its timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(4):  # fill the backlog; the ones past it stay in SYN_SENT
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        queued.append(client)
    yield port
    for client in queued:
        client.close()
    listener.close()
