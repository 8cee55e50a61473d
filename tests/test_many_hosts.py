"""Two portal deployments (two gunicorn masters, as two hosts would run them) behind nginx's
round-robin, on one PostgreSQL and one Redis: what holds on one host holds across them.

- a daily quota of N, hit by 5N requests at once through the balancer, lets exactly N through,
  and both hosts served some of them;
- a key revoked (by a third process, as an operator's shell on another machine) fails on the
  very next request, whichever host takes it;
- every answered request leaves exactly one usage record, whichever host wrote it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.routersim import RouterSim
from tests.servehelpers import (
    MODEL,
    Gunicorn,
    Nginx,
    apply_config,
    db_query,
    manage,
    provision,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="several hosts share PostgreSQL and Redis (CI sets both)",
    ),
]

N_DAILY = 6


@pytest.fixture(scope="module")
def hosts():
    sim = RouterSim("--latency-ms", "300", "--chunks", "4")
    database_url, key = provision(sim, email=f"hosts-{uuid.uuid4().hex[:6]}@example.com")
    plan = f"hosts-daily-{uuid.uuid4().hex[:6]}"
    apply_config(
        {"plans": [{"name": plan, "models": ["*"], "requests_per_day": N_DAILY}]},
        database_url=database_url,
    )
    quota_key = manage(
        "apikey_create",
        "--email",
        f"{plan}@example.com",
        "--name",
        "daily",
        "--plan",
        plan,
        "--create-user",
        database_url=database_url,
    ).strip()
    first = Gunicorn(database_url=database_url, workers=1)
    second = Gunicorn(database_url=database_url, workers=1)
    balancer = Nginx([first.url, second.url])
    yield balancer, {"plain": key, "daily": quota_key}, database_url, (first, second)
    balancer.stop()
    first.stop()
    second.stop()
    sim.stop()


def _chat(url: str, key: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    )


def _burst(url: str, key: str, count: int) -> list[requests.Response]:
    barrier = threading.Barrier(count)

    def one(_):
        barrier.wait()
        return _chat(url, key)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _records(database_url: str, answers) -> list[dict]:
    """The usage records of these answers once all are written (a deadline, not a sleep)."""
    ids = [answer.headers["x-request-id"] for answer in answers]
    deadline = time.monotonic() + 30
    while True:
        rows = db_query(
            database_url,
            "SELECT request_id, outcome FROM metering_usagerecord WHERE request_id = ANY(%s)",
            [ids],
        )
        if len(rows) >= len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_a_daily_quota_is_exact_across_hosts(hosts):
    balancer, keys, database_url, servers = hosts
    answers = _burst(balancer.url, keys["daily"], 5 * N_DAILY)

    assert Counter(a.status_code for a in answers) == {200: N_DAILY, 429: 4 * N_DAILY}
    served_by = Counter(a.headers["X-Upstream"] for a in answers)
    assert set(served_by) == {f"127.0.0.1:{server.port}" for server in servers}
    rows = _records(database_url, answers)
    assert sorted(r["request_id"] for r in rows) == sorted(
        a.headers["x-request-id"] for a in answers
    )
    assert Counter(r["outcome"] for r in rows) == {"ok": N_DAILY, "rate_limited": 4 * N_DAILY}


def test_a_revoked_key_fails_on_the_next_request_on_every_host(hosts):
    balancer, keys, database_url, _ = hosts
    key = keys["plain"]
    # Both hosts have the key in their cache: round-robin alternates them.
    warm = [_chat(balancer.url, key) for _ in range(4)]
    assert [a.status_code for a in warm] == [200] * 4
    assert len({a.headers["X-Upstream"] for a in warm}) == 2

    public_id = key.split("_")[1]
    manage(
        "shell",
        "-c",
        "from apikeys.models import ApiKey; from apikeys.services import apikey_revoke; "
        f"apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}), actor_label='ops')",
        database_url=database_url,
    )

    after = [_chat(balancer.url, key) for _ in range(4)]
    assert [a.status_code for a in after] == [401] * 4
    assert {a.json()["error"]["code"] for a in after} == {"invalid_api_key"}
    assert len({a.headers["X-Upstream"] for a in after}) == 2


def test_usage_records_equal_requests_across_hosts(hosts):
    balancer, _, database_url, _ = hosts
    fresh = manage(
        "apikey_create",
        "--email",
        f"hosts-usage-{uuid.uuid4().hex[:6]}@example.com",
        "--name",
        "usage",
        "--create-user",
        database_url=database_url,
    ).strip()
    answers = _burst(balancer.url, fresh, 40)
    assert Counter(a.status_code for a in answers) == {200: 40}
    assert len({a.headers["X-Upstream"] for a in answers}) == 2
    rows = _records(database_url, answers)
    assert len(rows) == 40
    assert len({r["request_id"] for r in rows}) == 40
