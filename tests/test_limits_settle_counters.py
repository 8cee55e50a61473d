"""Settling corrects every token counter a request reserved on, to what it really used: the
per-minute windows (the plan's and a key's own cap), the day and the month, on both backends.
A settle repeated (a retry after a timeout) counts nothing twice.

Mutation testing (make mutate) found each of these unwatched: a settle that skipped the
month, the key's window or corrected the window the wrong way still passed every test.
"""

from __future__ import annotations

import pytest

from metering.limits import limits_admit, limits_status
from tests.test_limits_support import BACKENDS, future_ms, make_backend, make_plan, principal

RESERVED = 100
USED = 30
TOKEN_COUNTERS = ("tokens_per_minute", "tokens_per_day", "tokens_per_month")


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    return make_backend(request.param, settings)


def _plan(**overrides):
    return make_plan(
        **{
            "tokens_per_minute": 10_000,
            "tokens_per_day": 100_000,
            "tokens_per_month": 1_000_000,
            "max_concurrent_requests": 5,
            **overrides,
        }
    )


def _used(who, plan, backend, now) -> dict:
    status = limits_status(principal=who, plan=plan, backend=backend, _now_ms=now)
    return {name: status[name]["used"] for name in (*TOKEN_COUNTERS, "max_concurrent_requests")}


def _admit_and_settle(who, plan, backend, now, *, used: int, request_id: str = "r1"):
    admission = limits_admit(
        principal=who,
        plan=plan,
        reserve_tokens=RESERVED,
        request_id=request_id,
        backend=backend,
        _now_ms=now,
    )
    admission.settle(total_tokens=used, _now_ms=now)
    return admission


@pytest.mark.parametrize("used", [USED, RESERVED + 50], ids=["under", "over-the-reservation"])
def test_settle_sets_every_plan_counter_to_the_real_count(backend, used):
    now = future_ms()
    who, plan = principal(owner_id=301, key_id=401), _plan()
    _admit_and_settle(who, plan, backend, now, used=used)
    assert _used(who, plan, backend, now) == {
        "tokens_per_minute": used,
        "tokens_per_day": used,
        "tokens_per_month": used,
        "max_concurrent_requests": 0,
    }


def test_settle_corrects_a_keys_own_tighter_token_window(backend):
    """With the key's cap tighter than the plan's, the per-minute figure is the key's window."""
    now = future_ms()
    who, plan = principal(owner_id=302, key_id=402, tpm=500), _plan()
    _admit_and_settle(who, plan, backend, now, used=USED)
    assert _used(who, plan, backend, now)["tokens_per_minute"] == USED
    status = limits_status(principal=who, plan=plan, backend=backend, _now_ms=now)
    assert status["tokens_per_minute"]["limit"] == 500


def test_a_key_window_settled_leaves_room_for_what_was_not_used(backend):
    """Reserved 100 of a key's 150 a minute, used 30: another 100 fits (it would not if the
    key's window kept the reservation, or was corrected the wrong way)."""
    now = future_ms()
    who, plan = principal(owner_id=303, key_id=403, tpm=150), _plan()
    _admit_and_settle(who, plan, backend, now, used=USED)
    _admit_and_settle(who, plan, backend, now, used=USED, request_id="r2")
    assert _used(who, plan, backend, now)["tokens_per_minute"] == 2 * USED


def test_settling_twice_counts_once(backend):
    now = future_ms()
    who, plan = principal(owner_id=304, key_id=404), _plan()
    admission = _admit_and_settle(who, plan, backend, now, used=USED)
    admission.settle(total_tokens=USED, _now_ms=now)  # a retry: no error, nothing doubled
    assert _used(who, plan, backend, now) == {
        "tokens_per_minute": USED,
        "tokens_per_day": USED,
        "tokens_per_month": USED,
        "max_concurrent_requests": 0,
    }


def test_a_settled_request_leaves_the_window_with_its_real_count(backend):
    """A minute on, a request leaves the per-minute window with what it used, not with its
    reservation: only the later request's tokens remain."""
    t0 = future_ms()
    who, plan = principal(owner_id=305, key_id=405), _plan()
    _admit_and_settle(who, plan, backend, t0, used=USED)
    _admit_and_settle(who, plan, backend, t0 + 30_000, used=USED + 5, request_id="r2")
    assert _used(who, plan, backend, t0 + 61_000)["tokens_per_minute"] == USED + 5
