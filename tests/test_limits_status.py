"""What limits_status and the x-ratelimit headers report: each limit's limit, used, remaining
and reset time, the tighter of a plan's and a key's per-minute window, and a key's own cap in
the headers of answers that admit nothing. On both backends, on a fixed future clock.

Mutation testing (make mutate) found these unwatched: a month or concurrency entry reporting
nothing, the looser window chosen on a tie, and headers that ignored the key's cap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from metering.limits import limits_admit, limits_headers, limits_status
from tests.test_limits_support import BACKENDS, future_ms, make_backend, make_plan, principal


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    return make_backend(request.param, settings)


def _admit(who, plan, backend, now, request_id):
    return limits_admit(
        principal=who,
        plan=plan,
        reserve_tokens=0,
        request_id=request_id,
        backend=backend,
        _now_ms=now,
    )


def test_every_entry_reports_limit_used_remaining_and_reset(backend):
    now = future_ms(hours=10)
    who = principal(owner_id=701, key_id=801)
    plan = make_plan(requests_per_day=10, requests_per_month=100, max_concurrent_requests=3)
    _admit(who, plan, backend, now, "held")  # not settled: still in flight
    status = limits_status(principal=who, plan=plan, backend=backend, _now_ms=now)
    today = datetime.fromtimestamp(now / 1000, tz=UTC).replace(hour=0, minute=0, second=0)
    month_end = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    assert status["requests_per_day"] == {
        "limit": 10,
        "used": 1,
        "remaining": 9,
        "reset_at": today + timedelta(days=1),
    }
    assert status["requests_per_month"] == {
        "limit": 100,
        "used": 1,
        "remaining": 99,
        "reset_at": month_end,
    }
    concurrency = status["max_concurrent_requests"]
    assert (concurrency["limit"], concurrency["used"], concurrency["remaining"]) == (3, 1, 2)


def test_the_per_minute_figure_is_the_window_with_least_room(backend):
    """Plan 3 a minute, key 4: after 3 requests the plan's window (no room) is the one shown,
    though the key's has room for one."""
    now = future_ms(hours=10)
    who, plan = principal(owner_id=702, key_id=802, rpm=4), make_plan(requests_per_minute=3)
    for i in range(3):
        _admit(who, plan, backend, now, f"r{i}")
    minute = limits_status(principal=who, plan=plan, backend=backend, _now_ms=now)[
        "requests_per_minute"
    ]
    assert (minute["limit"], minute["used"], minute["remaining"]) == (3, 3, 0)


def test_headers_without_an_admission_show_the_keys_own_cap(db):
    who = principal(owner_id=703, key_id=803, rpm=2)
    headers = limits_headers(principal=who, plan=make_plan(requests_per_minute=100))
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "2"  # looking admitted nothing
