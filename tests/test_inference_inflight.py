"""Requests in flight per router across workers: each process publishes its own counts to
Redis in the background, the operator's pages sum the live ones; without Redis, this
process's own counts, said to be so."""

from __future__ import annotations

import os
import time

import pytest
from django.conf import settings as django_settings

from catalog.routing import RouterInfo
from core.redis import get_redis
from inference import balancer, inflight

needs_redis = pytest.mark.skipif(
    not django_settings.REDIS_URL, reason="workers share their figures through Redis"
)
PREFIX = f"inflight-{os.environ['PORTAL_TEST_RUN_ID']}"


@pytest.fixture
def own_prefix(settings):
    """A prefix of this test's own: nothing else publishes under it."""
    settings.LIMITS_KEY_PREFIX = PREFIX
    yield
    get_redis().delete(inflight.routers_inflight_key())


@pytest.fixture(autouse=True)
def _fresh_balancer():
    balancer.reset()
    yield
    balancer.reset()


def _until(condition, what: str, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


@needs_redis
def test_the_key_is_under_the_deployments_prefix(own_prefix):
    assert inflight.routers_inflight_key().startswith(f"{PREFIX}:")


@needs_redis
def test_two_processes_counts_are_summed_and_a_silent_ones_vanish(own_prefix):
    inflight.inflight_publish(process="host:1:a", counts={7: 2, 8: 1}, ttl_seconds=0.3)
    inflight.inflight_publish(process="host:2:b", counts={7: 3, 9: 0})

    both = balancer.routers_in_flight()
    assert both.scope == "all workers" and both.workers == 2
    assert (both.of(7), both.of(8), both.of(9)) == (5, 1, 0)

    # Process 1 stops publishing (it died): its figures stop counting once due...
    _until(lambda: balancer.routers_in_flight().workers == 1, "process 1 never expired")
    after = balancer.routers_in_flight()
    assert (after.of(7), after.of(8)) == (3, 0)
    # ...and the next publish of any process takes its field out of the hash.
    inflight.inflight_publish(process="host:2:b", counts={7: 1})
    assert set(get_redis().hkeys(inflight.routers_inflight_key())) == {b"host:2:b"}
    assert balancer.routers_in_flight().of(7) == 1


@needs_redis
def test_the_publisher_writes_this_processs_counts_in_the_background(own_prefix):
    counts = {4: 2}
    publisher = inflight.Publisher(lambda: dict(counts))
    try:
        _until(lambda: balancer.routers_in_flight().of(4) == 2, "never published")
        counts[4] = 0
        _until(lambda: balancer.routers_in_flight().of(4) == 0, "the release never published")
        assert inflight.inflight_by_process() == {publisher.process: {}}
    finally:
        publisher.stop()


@needs_redis
def test_a_publish_that_fails_does_not_raise(own_prefix, monkeypatch):
    def broken(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(inflight, "inflight_publish", broken)
    publisher = inflight.Publisher(dict)
    publisher.stop()
    publisher.publish_once()  # logs once, raises nothing


def test_without_redis_the_figure_is_this_processs_own(settings):
    settings.REDIS_URL = None
    router = RouterInfo(id=11, pool_id=1, base_url="http://r", api_version="v1", session_id=1,
                        token="t", weight=1, connect_timeout=1.0, read_timeout=1.0,
                        health="healthy")  # fmt: skip
    assert balancer.pick([router], set()) is router
    here = balancer.routers_in_flight()
    assert (here.of(11), here.scope, here.this_process_only) == (1, "this process", True)
    balancer.release(11)
    assert balancer.routers_in_flight().of(11) == 0
