"""Choosing a router: weights honoured, the least loaded preferred, and a circuit breaker
whose half-open state lets exactly one trial through and is resolved by every way that trial
can end, so that no router is shut out for good.

The breaker reads `balancer.clock`; the tests step a fake one past the cool-down instead of
waiting for it."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from catalog.routing import RouterInfo
from inference import balancer
from tests.routersim import RouterSim


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def step_past_cool_down(self) -> None:
        self.now += balancer.COOL_DOWN_SECONDS + 1


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(balancer, "clock", fake)
    balancer.reset()
    yield fake
    balancer.reset()


def router(router_id: int, weight: int = 1) -> RouterInfo:
    return RouterInfo(
        id=router_id,
        pool_id=1,
        base_url=f"http://router-{router_id}",
        api_version="v1",
        session_id=1,
        token="t",
        weight=weight,
        connect_timeout=1.0,
        read_timeout=None,
        health="healthy",
    )


def open_breaker(router_id: int) -> None:
    for _ in range(balancer.FAILURES_TO_OPEN):
        balancer.record_failure(router_id)


# -- choosing among healthy routers -----------------------------------------------------------


def test_weights_are_honoured_over_many_picks(clock):
    random.seed(1234)  # fixed, but the bound below holds for any seed
    light, heavy = router(1, weight=1), router(2, weight=3)
    picks = 8000
    counts: Counter[int] = Counter()
    for _ in range(picks):
        chosen = balancer.pick([light, heavy], set())
        counts[chosen.id] += 1
        balancer.release(chosen.id)
    # Expected share 3/4; six standard deviations of a binomial (~0.029 of the share at this
    # size) keep a correct balancer inside the bound for any seed, and one that ignores the
    # weights (1/2) far outside it.
    expected = picks * 3 / 4
    sd = (picks * 3 / 4 * 1 / 4) ** 0.5
    assert abs(counts[2] - expected) < 6 * sd, counts


def test_the_least_loaded_router_is_preferred_among_equals(clock):
    busy, idle = router(1), router(2)
    for _ in range(3):
        assert balancer.pick([busy], set()) == busy  # three requests in flight on `busy`
    for _ in range(50):
        chosen = balancer.pick([busy, idle], set())
        assert chosen == idle
        balancer.release(chosen.id)


def test_load_is_weighed_against_the_router_weight(clock):
    small, big = router(1, weight=1), router(2, weight=4)
    picks = [balancer.pick([small, big], set()).id for _ in range(10)]  # none released
    # In flight per unit of weight stays even: 2 on the small one, 8 on the big one.
    assert Counter(picks) == {1: 2, 2: 8}


def test_a_release_frees_one_request_not_all_of_them(clock):
    busy, big = router(1, weight=1), router(2, weight=2)
    for _ in range(4):
        assert balancer.pick([busy], set()) == busy
    for _ in range(5):
        assert balancer.pick([big], set()) == big
    balancer.release(busy.id)
    # 3 in flight on `busy` against 5 on `big` (2.5 per unit of weight): `big` is the less
    # loaded. Had the release forgotten every request on `busy`, or two of them, it would win.
    assert balancer.pick([busy, big], set()) == big


def test_excluded_and_unhealthy_routers_are_never_picked(clock):
    from dataclasses import replace

    tried, sick, left = router(1), replace(router(2), health="unhealthy"), router(3)
    for _ in range(20):
        chosen = balancer.pick([tried, sick, left], {tried.id})
        assert chosen == left
        balancer.release(chosen.id)
    assert balancer.pick([tried, sick], {tried.id}) is None


# -- the breaker ------------------------------------------------------------------------------


def test_consecutive_failures_open_the_breaker_until_the_cool_down_ends(clock):
    only = router(1)
    open_breaker(only.id)
    assert balancer.breaker_state(only.id) == "open"
    assert balancer.pick([only], set()) is None
    clock.step_past_cool_down()
    assert balancer.breaker_state(only.id) == "half_open"
    assert balancer.pick([only], set()) == only


def test_fewer_consecutive_failures_leave_the_breaker_closed(clock):
    only = router(1)
    for _ in range(balancer.FAILURES_TO_OPEN - 1):
        balancer.record_failure(only.id)
    assert balancer.breaker_state(only.id) == "closed"
    assert balancer.pick([only], set()) == only


def test_the_cool_down_ends_exactly_when_it_says(clock):
    only = router(1)
    open_breaker(only.id)
    clock.now += balancer.COOL_DOWN_SECONDS - 0.5
    assert balancer.breaker_state(only.id) == "open"
    assert balancer.pick([only], set()) is None
    clock.now += 0.5  # the very instant it ends: the trial may go
    assert balancer.breaker_state(only.id) == "half_open"
    assert balancer.pick([only], set()) == only


def test_exactly_one_trial_while_half_open(clock):
    flaky, other = router(1), router(2)
    open_breaker(flaky.id)
    clock.step_past_cool_down()

    trial = balancer.pick([flaky], set())
    assert trial == flaky
    assert balancer.breaker_state(flaky.id) == "probing"
    # While the trial is out, nobody else gets the router, however many ask.
    for _ in range(20):
        assert balancer.pick([flaky], set()) is None
        chosen = balancer.pick([flaky, other], set())
        assert chosen == other
        balancer.release(chosen.id)

    balancer.record_success(flaky.id)
    balancer.release(flaky.id)
    assert balancer.breaker_state(flaky.id) == "closed"
    assert balancer.pick([flaky], set()) == flaky


def test_a_failed_trial_opens_the_breaker_for_another_cool_down(clock):
    flaky = router(1)
    open_breaker(flaky.id)
    clock.step_past_cool_down()
    assert balancer.pick([flaky], set()) == flaky
    balancer.record_failure(flaky.id)
    balancer.release(flaky.id)
    assert balancer.breaker_state(flaky.id) == "open"
    assert balancer.pick([flaky], set()) is None
    clock.step_past_cool_down()
    assert balancer.pick([flaky], set()) == flaky  # and then one more trial


# -- every way a trial over HTTP can end resolves it ------------------------------------------


def _model_on(sim: RouterSim, **model_fields) -> tuple[str, int]:
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=f"trial-{sim.port}")
    row = Router.objects.create(pool=pool, base_url=sim.url, session_id=1, token=sim.token)
    fields = {"max_tokens": 64, "default_max_tokens": 8, **model_fields}
    CatalogModel.objects.create(public_id=f"cortensor/trial-{sim.port}", pool=pool, **fields)
    return f"cortensor/trial-{sim.port}", row.pk


def _post(client, raw, model, **extra):
    return client.post(
        "/v1/chat/completions",
        json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )


def _read_stream(response) -> None:
    b"".join(response.streaming_content)


def _disconnect_after_first_chunk(response) -> None:
    next(iter(response.streaming_content))
    response.close()  # what the server does when the client goes away


TRIALS = {
    # outcome: (simulator options, model fields, request fields, how the client reads,
    #           the status it gets, the breaker after the trial)
    "success": ((), {}, {}, None, 200, "closed"),
    "stream success": ((), {}, {"stream": True}, _read_stream, 200, "closed"),
    "router 4xx": (("--status", "400"), {}, {}, None, 400, "closed"),
    "router 5xx": (("--status", "500"), {}, {}, None, 503, "open"),
    "timeout": (("--hang",), {"request_timeout": 1}, {}, None, 504, "open"),
    "connection reset": (("--drop-after", "0"), {}, {}, None, 502, "open"),
    "client disconnect": (
        ("--chunk-delay-ms", "200"),
        {},
        {"stream": True},
        _disconnect_after_first_chunk,
        200,
        "closed",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", list(TRIALS))
def test_every_trial_outcome_resolves_the_half_open_breaker(clock, client, alice_key, outcome):
    options, model_fields, extra, read, status, after = TRIALS[outcome]
    _, raw = alice_key
    with RouterSim(*options) as sim:
        model, router_id = _model_on(sim, **model_fields)
        open_breaker(router_id)
        clock.step_past_cool_down()
        assert balancer.breaker_state(router_id) == "half_open"

        response = _post(client, raw, model, **extra)
        assert response.status_code == status, response.content
        if read is not None:
            read(response)

    assert balancer.breaker_state(router_id) == after  # never left "probing"
    clock.step_past_cool_down()
    from catalog.routing import routing_table

    routers = routing_table().routers[routing_table().models[model].pool_id]
    assert balancer.pick(routers, set()) is not None  # the router can be tried again


@pytest.mark.django_db
def test_weights_from_the_catalog_steer_real_requests(client, alice_key):
    """End to end: the weights entered for a pool's routers decide where requests go."""
    from catalog.models import CatalogModel, Router, RouterPool

    _, raw = alice_key
    with RouterSim() as light, RouterSim() as heavy:
        pool = RouterPool.objects.create(name="weighted")
        for sim, weight in ((light, 1), (heavy, 4)):
            Router.objects.create(
                pool=pool, base_url=sim.url, session_id=1, token=sim.token, weight=weight
            )
        CatalogModel.objects.create(
            public_id="cortensor/weighted", pool=pool, max_tokens=8, default_max_tokens=1
        )
        requests_sent = 200
        for _ in range(requests_sent):
            assert _post(client, raw, "cortensor/weighted").status_code == 200
        import requests

        served = {
            name: requests.get(f"{sim.url}/api/v1/status", headers=sim.headers, timeout=5).json()[
                "requests_total"
            ]
            for name, sim in (("light", light), ("heavy", heavy))
        }
    assert served["light"] + served["heavy"] == requests_sent
    # Expected 4/5 on the heavy router; six standard deviations (~34 requests) of slack. Equal
    # shares (weights ignored) would be 100, far below the bound.
    expected, sd = requests_sent * 4 / 5, (requests_sent * 4 / 5 * 1 / 5) ** 0.5
    assert abs(served["heavy"] - expected) < 6 * sd, served
