"""The Redis backend on the hot path: one round trip and no database query per admission,
survives a script cache flush, and fails closed (503) or, when configured, open."""

from __future__ import annotations

import logging
import os

import pytest

from core.errors import ServiceUnavailable
from core.redis import direct_lane, is_cluster, redis_from_url
from metering.limits import get_backend, keys, limits_admit, limits_settle_many
from metering.limits.memory_backend import MemoryBackend
from metering.limits.redis_backend import RedisBackend
from tests.test_limits_support import make_plan, principal, unreachable_redis_client

PLAN = make_plan(
    requests_per_minute=100,
    tokens_per_minute=10_000,
    requests_per_day=1000,
    tokens_per_day=100_000,
    requests_per_month=10_000,
    tokens_per_month=10**6,
    max_concurrent_requests=5,
)


@pytest.fixture
def counting(settings):
    """A client like production's (a cluster one with REDIS_CLUSTER=1), every command it sends
    recorded in `.commands`."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    client = redis_from_url(settings.REDIS_URL)
    client.commands = []
    send = client.execute_command

    def execute_command(*args, **options):
        client.commands.append(str(args[0]).upper())
        return send(*args, **options)

    # on a cluster the proxy's commands are the cluster client's own (made here, at once)
    (client.connected() if is_cluster(client) else client).execute_command = execute_command
    yield client
    client.close()


@pytest.fixture(params=["redis", "lane", "cluster"])
def unreachable(request):
    """A backend whose Redis is down: one server (its admissions through the client, or
    through the request path's lane), or every node of a cluster (whose client raises
    RedisClusterException, not a RedisError, unless core.redis translates it)."""
    if request.param == "redis":
        return RedisBackend(unreachable_redis_client())
    if request.param == "lane":
        client = unreachable_redis_client()
        return RedisBackend(client, lane=direct_lane(client))
    port = unreachable_redis_client().connection_pool.connection_kwargs["port"]
    return RedisBackend(redis_from_url(f"redis://127.0.0.1:{port}/0", cluster=True))


def _admit(backend: RedisBackend, request_id: str, *, reserve_tokens: int):
    return limits_admit(
        principal=principal(),
        plan=PLAN,
        reserve_tokens=reserve_tokens,
        request_id=request_id,
        backend=backend,
    )


def test_an_admission_is_one_redis_round_trip_and_no_database_query(
    counting, db, django_assert_num_queries
):
    backend = RedisBackend(counting)
    limits_admit(
        principal=principal(rpm=50, tpm=5000),
        plan=PLAN,
        reserve_tokens=10,
        request_id="warm",
        backend=backend,
    ).settle(total_tokens=5)
    counting.commands.clear()
    with django_assert_num_queries(0):
        adm = limits_admit(
            principal=principal(rpm=50, tpm=5000),
            plan=PLAN,
            reserve_tokens=100,
            request_id="r1",
            backend=backend,
        )
    assert counting.commands == ["EVALSHA"]
    counting.commands.clear()
    with django_assert_num_queries(0):
        adm.settle(total_tokens=42)
    assert counting.commands == ["EVALSHA"]


def _forgotten_then(counting, call, attempts: int = 4):
    """Flush Redis's script cache, then `call`; the commands it sent. The cache is the whole
    server's: another run (or xdist worker) on this Redis may load the same script between the
    flush and the call, and then the call's EVALSHA just works. So flush and call again until
    the call itself met the empty cache, a bounded number of times (each admission left
    unsettled holds one of the plan's 5 concurrent slots)."""
    for _ in range(attempts):
        counting.script_flush()  # a Redis restart loses the script cache
        counting.commands.clear()
        result = call()
        if counting.commands != ["EVALSHA"]:
            return counting.commands, result
    raise AssertionError(f"another process reloaded the script {attempts} times in a row")


def test_the_scripts_are_reloaded_after_redis_forgets_them(counting):
    backend = RedisBackend(counting)
    limits_admit(
        principal=principal(), plan=PLAN, reserve_tokens=1, request_id="a", backend=backend
    )
    ids = iter(f"b{n}" for n in range(100))

    def admit():
        return limits_admit(
            principal=principal(),
            plan=PLAN,
            reserve_tokens=1,
            request_id=next(ids),
            backend=backend,
        )

    commands, _ = _forgotten_then(counting, admit)
    assert commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]

    def admit_then_settle():  # the flush comes between the admission and its settle
        adm = admit()
        counting.script_flush()
        counting.commands.clear()
        adm.settle(total_tokens=1)

    commands, _ = _forgotten_then(counting, admit_then_settle)
    assert commands[-3:] == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]


@pytest.mark.parametrize("lane", [False, True], ids=["pipeline", "lane"])
def test_a_batched_settle_after_redis_forgot_the_scripts_settles_each_admission_once(
    settings, lane
):
    """The usage writer's settles go down one pipeline (or one write on the lane) as bare
    EVALSHAs, no SCRIPT EXISTS first: after a flush each answers NOSCRIPT, so it did not run,
    and runs once more."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    client = redis_from_url(settings.REDIS_URL)
    backend = RedisBackend(client, lane=direct_lane(client) if lane else None)
    admissions = [
        limits_admit(
            principal=principal(),
            plan=PLAN,
            reserve_tokens=100,
            request_id=f"batch-{n}",
            backend=backend,
        )
        for n in range(3)
    ]
    ticket = admissions[0].ticket
    assert ticket is not None
    tokens_today = keys.period(ticket.org_base, "tpd", ticket.periods.day, ticket.periods.month)
    before = int(client.get(tokens_today))
    client.script_flush()  # a Redis restart loses the script cache
    limits_settle_many([(admission, 10) for admission in admissions])
    assert int(client.get(tokens_today)) == before - 3 * 90
    assert all(admission.settled for admission in admissions)
    client.close()


def test_day_and_month_counters_expire_after_their_period_whoever_made_them(settings):
    """Admission sets a counter's expiry only when it makes the counter, and settling only when
    it does (the counter was lost) or floors it at zero (SET drops an expiry): each case keeps
    one, a day past the day's or the month's end."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    client = redis_from_url(settings.REDIS_URL)
    backend = RedisBackend(client)

    first = _admit(backend, "expiry-a", reserve_tokens=100)
    ticket = first.ticket
    assert ticket is not None
    periods = ticket.periods
    org = {
        name: keys.period(ticket.org_base, name, periods.day, periods.month)
        for name in ("rpd", "tpd", "rpmo", "tpmo")
    }
    own = dict(
        zip(
            ("rpd", "tpd", "rpmo", "tpmo"),
            keys.key_periods(ticket.key_base, periods.day, periods.month),
            strict=True,
        )
    )
    ends = {"rpd": periods.day_expire_at, "tpd": periods.day_expire_at}
    ends.update(rpmo=periods.month_expire_at, tpmo=periods.month_expire_at)
    client.delete(*org.values(), *own.values())
    second = _admit(backend, "expiry-b", reserve_tokens=100)  # makes every counter anew
    for name, end in ends.items():
        assert client.expiretime(org[name]) == end, name
        assert client.expiretime(own[name]) == end, name
    third = _admit(backend, "expiry-c", reserve_tokens=100)  # finds them there
    for name, end in ends.items():
        assert client.expiretime(org[name]) == end, name
    client.delete(org["tpd"], own["tpd"])
    second.settle(total_tokens=0)  # lost counters, settled below zero: floored, expiring
    assert client.get(org["tpd"]) == b"0"
    assert client.expiretime(org["tpd"]) == periods.day_expire_at
    client.delete(org["tpmo"], own["tpmo"])
    third.settle(total_tokens=150)  # a lost counter made by the settle's own count
    assert client.get(org["tpmo"]) == b"50"
    assert client.expiretime(org["tpmo"]) == periods.month_expire_at
    assert client.expiretime(own["tpmo"]) == periods.month_expire_at
    first.settle(total_tokens=100)
    client.close()


def test_unreachable_redis_fails_closed_with_a_clear_503(unreachable, settings):
    settings.LIMITS_FAIL_OPEN = False
    with pytest.raises(ServiceUnavailable) as refused:
        limits_admit(
            principal=principal(), plan=PLAN, reserve_tokens=1, request_id="r", backend=unreachable
        )
    err = refused.value
    assert err.status == 503 and err.code == "service_unavailable"
    assert "cannot check your rate limits" in err.message
    assert err.headers["Retry-After"]


def test_unreachable_redis_admits_with_a_warning_when_fail_open(unreachable, settings, caplog):
    settings.LIMITS_FAIL_OPEN = True
    with caplog.at_level(logging.WARNING, logger="metering.limits"):
        adm = limits_admit(
            principal=principal(), plan=PLAN, reserve_tokens=1, request_id="r", backend=unreachable
        )
    assert adm.headers == {}
    assert "fail open" in caplog.text
    adm.settle(total_tokens=1)  # nothing to release, and no error


def test_settle_never_raises_when_redis_went_away_meanwhile(counting, caplog):
    backend = RedisBackend(counting)
    adm = limits_admit(
        principal=principal(), plan=PLAN, reserve_tokens=1, request_id="r", backend=backend
    )
    adm._backend = RedisBackend(unreachable_redis_client())
    with caplog.at_level(logging.WARNING, logger="metering.limits"):
        adm.settle(total_tokens=1)
    assert "settle failed" in caplog.text


def test_the_backend_is_redis_with_redis_url_and_memory_without(settings):
    settings.REDIS_URL = None
    assert isinstance(get_backend(), MemoryBackend)
    assert get_backend() is get_backend()  # one per process: the counters must be shared
    # Any URL will do (the backend connects lazily): the run's own, not a fixed database.
    settings.REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    assert isinstance(get_backend(), RedisBackend)


def test_the_direct_lane_admits_releases_and_reloads_a_forgotten_script(settings):
    """The request path's lane (core.redis.DirectLane): the admission's EVALSHA and the slot's
    ZREM go down it, and a script Redis forgot is loaded through redis-py's Script."""
    if not settings.REDIS_URL or getattr(settings, "REDIS_CLUSTER", False):
        pytest.skip("a single Redis: on a cluster the limits take the cluster client")
    client = redis_from_url(settings.REDIS_URL)
    backend = RedisBackend(client, lane=direct_lane(client))

    for request_id in ("lane-a", "lane-b"):
        client.script_flush()  # a Redis restart loses the script cache
        adm = _admit(backend, request_id, reserve_tokens=1)
        slot = keys.inflight(adm.ticket.org_base)
        assert client.zscore(slot, adm.ticket.member) is not None, "admitted: a slot taken"
        adm.release()
        assert client.zscore(slot, adm.ticket.member) is None, "released: the slot is free"
        adm.settle(total_tokens=1)
    client.close()
