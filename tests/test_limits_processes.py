"""Limits hold across PROCESSES sharing one Redis: N of N, never N+1, however the admissions
race. Five real Python processes (the same settings and REDIS_URL) admit at the same time."""

from __future__ import annotations

import time

import pytest

from core.errors import RateLimited
from metering.limits import limits_admit, limits_status
from tests.test_limits_support import (
    WorkerPool,
    future_ms,
    make_backend,
    make_plan,
    max_overlap,
    principal,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("redis_backend")]


@pytest.fixture
def redis_backend(settings):
    return make_backend("redis", settings)


@pytest.fixture(scope="module")
def workers():
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    pool = WorkerPool(5)
    yield pool
    pool.close()


def test_a_daily_quota_of_n_lets_exactly_n_through_from_five_processes(workers, redis_backend):
    n = 20
    results = workers.run({"plan": {"requests_per_day": n}, "attempts": n, "settle": 0})
    assert sum(r["admitted"] for r in results) == n
    assert sum(r["refused"] for r in results) == 4 * n
    status = limits_status(
        principal=principal(), plan=make_plan(requests_per_day=n), backend=redis_backend
    )
    assert status["requests_per_day"]["used"] == n
    assert status["requests_per_day"]["remaining"] == 0


def test_an_rpm_of_r_lets_exactly_r_through_and_the_window_slides_exactly(workers):
    r, t0 = 12, future_ms()
    phase = {"plan": {"requests_per_minute": r}, "attempts": r, "settle": 0}
    first = workers.run({**phase, "now_ms": t0})
    edge = workers.run({**phase, "now_ms": t0 + 60_000 - 1})  # last ms of the same window
    slid = workers.run({**phase, "now_ms": t0 + 60_000})  # the first ones have left it
    assert sum(p["admitted"] for p in first) == r
    assert sum(p["admitted"] for p in edge) == 0
    assert sum(p["admitted"] for p in slid) == r


def test_a_concurrency_cap_of_c_never_sees_c_plus_one_in_flight(workers, redis_backend):
    c = 3
    results = workers.run(
        {"plan": {"max_concurrent_requests": c}, "seconds": 1.0, "hold": 0.03, "settle": 5}
    )
    intervals = [tuple(i) for r in results for i in r["intervals"]]
    assert max_overlap(intervals) == c  # they raced up to the cap, never past it
    assert sum(r["refused"] for r in results) > 0
    status = limits_status(
        principal=principal(), plan=make_plan(max_concurrent_requests=c), backend=redis_backend
    )
    assert status["max_concurrent_requests"]["used"] == 0  # every slot released


def test_token_reservations_across_processes_never_overrun_the_quota(workers, redis_backend):
    plan = {"tokens_per_day": 1000}
    held = workers.run({"plan": plan, "attempts": 5, "reserve": 100})  # never settled
    assert sum(r["admitted"] for r in held) == 10  # 10 x 100 reserved: the whole quota
    again = workers.run({"plan": plan, "attempts": 5, "reserve": 100, "settle": 40})
    assert sum(r["admitted"] for r in again) == 0
    status = limits_status(principal=principal(), plan=make_plan(**plan), backend=redis_backend)
    assert status["tokens_per_day"]["used"] == 1000


def test_the_slot_of_a_process_that_died_mid_request_expires(redis_backend):
    plan = make_plan(max_concurrent_requests=1)
    doomed = WorkerPool(1)
    try:
        assert doomed.run(
            {"plan": {"max_concurrent_requests": 1}, "attempts": 1, "lease": 1, "die": True}
        ) == [None]  # it died holding the only slot
    finally:
        doomed.close()
    with pytest.raises(RateLimited, match="concurrent"):
        limits_admit(
            principal=principal(),
            plan=plan,
            reserve_tokens=0,
            request_id="p1",
            backend=redis_backend,
        )
    time.sleep(1.05)
    adm = limits_admit(
        principal=principal(), plan=plan, reserve_tokens=0, request_id="p2", backend=redis_backend
    )
    adm.settle(total_tokens=0)
