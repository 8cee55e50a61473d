"""Limits are exact over HTTP, through two gunicorn workers on PostgreSQL and Redis: the
production shape, where requests of one customer land on different processes at once.

- a daily quota of N, hit by 5N requests at once, lets exactly N through;
- a requests-per-minute limit of R, hit by 3R at once, lets exactly R through, and so does a
  key's own, lower, RPM cap;
- with at most C requests in flight (the simulator holds each for a while), the router never
  sees C+1 at once;
- a key's own tokens-per-minute cap is never overrun.

Every answered request leaves exactly one usage record (ok or rate_limited).
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
from tests.servehelpers import MODEL, Gunicorn, config_file, db_query, manage_many, provision

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="exactness across processes needs PostgreSQL and Redis (CI sets both)",
    ),
]

N_DAILY = 8
R_PLAN = 6
R_KEY = 4
CONCURRENT = 3
HOLD_MS = 1500
TPM_KEY = 400
# Customers, each on a plan of its own (plans are made before gunicorn starts: a process
# picks catalog changes up within CATALOG_CHECK_MS, production's 1 s).
CUSTOMERS = {
    "daily": {"requests_per_day": N_DAILY},
    "rpm": {"requests_per_minute": R_PLAN},
    "key-rpm": {},
    "key-tpm": {},
    "concurrent": {"max_concurrent_requests": CONCURRENT},
    "one-at-a-time": {"max_concurrent_requests": 1},
}
KEY_CAPS = {"key-rpm": ("requests_per_minute", R_KEY), "key-tpm": ("tokens_per_minute", TPM_KEY)}


@pytest.fixture(scope="module")
def portal():
    # Every completion waits HOLD_MS at the router: requests overlap however the threads run.
    sim = RouterSim("--latency-ms", str(HOLD_MS), "--chunks", "4")
    database_url, _ = provision(sim, email=f"limits-base-{uuid.uuid4().hex[:6]}@example.com")
    plans = {name: f"exact-{name}-{uuid.uuid4().hex[:6]}" for name in CUSTOMERS}
    config = {
        "plans": [{"name": plans[name], "models": ["*"], **CUSTOMERS[name]} for name in plans]
    }
    with config_file(config) as path:
        _, *created = manage_many(
            ["apply_config", path],
            *(
                [
                    "apikey_create",
                    "--email",
                    f"{plan}@example.com",
                    "--name",
                    name,
                    "--plan",
                    plan,
                    "--create-user",
                ]
                for name, plan in plans.items()
            ),
            database_url=database_url,
        )
    keys = {name: key.strip() for name, key in zip(plans, created, strict=True)}
    # The service the key pages call: it also rewrites the key's cached entry.
    manage_many(
        *(
            [
                "shell",
                "-c",
                "from apikeys.models import ApiKey; from apikeys.services import apikey_update; "
                f"apikey_update(key=ApiKey.objects.get(public_id={keys[name].split('_')[1]!r}), "
                f"{column}={value}, actor_label='test')",
            ]
            for name, (column, value) in KEY_CAPS.items()
        ),
        database_url=database_url,
    )
    server = Gunicorn(database_url=database_url, workers=2)
    yield server, keys, database_url, sim
    server.stop()
    sim.stop()


def _burst(url: str, key: str, count: int, *, max_tokens: int = 4) -> list[requests.Response]:
    """`count` chats released at once (a barrier), each on its own connection."""
    barrier = threading.Barrier(count)

    def one(_):
        barrier.wait()
        return requests.post(
            f"{url}/v1/chat/completions",
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": MODEL,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _statuses(answers) -> Counter:
    return Counter(answer.status_code for answer in answers)


def _records_for(database_url: str, answers) -> list[dict]:
    """The usage records of these answers, once all are written (a deadline, not a sleep):
    exactly one per answer."""
    ids = [answer.headers["x-request-id"] for answer in answers]
    deadline = time.monotonic() + 30
    while True:
        rows = db_query(
            database_url,
            "SELECT request_id, outcome, total_tokens FROM metering_usagerecord "
            "WHERE request_id = ANY(%s)",
            [ids],
        )
        if len(rows) >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted(row["request_id"] for row in rows) == sorted(ids)
    return rows


def test_daily_quota_of_n_admits_exactly_n_of_5n_at_once(portal):
    server, keys, database_url, _ = portal
    answers = _burst(server.url, keys["daily"], 5 * N_DAILY)
    assert _statuses(answers) == {200: N_DAILY, 429: 4 * N_DAILY}
    refused = [a.json()["error"]["code"] for a in answers if a.status_code == 429]
    assert set(refused) == {"insufficient_quota"}
    outcomes = Counter(row["outcome"] for row in _records_for(database_url, answers))
    assert outcomes == {"ok": N_DAILY, "rate_limited": 4 * N_DAILY}


def test_plan_rpm_admits_exactly_r_of_3r_at_once(portal):
    server, keys, database_url, _ = portal
    answers = _burst(server.url, keys["rpm"], 3 * R_PLAN)
    assert _statuses(answers) == {200: R_PLAN, 429: 2 * R_PLAN}
    assert {a.headers["x-ratelimit-limit-requests"] for a in answers} == {str(R_PLAN)}
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 429)
    outcomes = Counter(row["outcome"] for row in _records_for(database_url, answers))
    assert outcomes == {"ok": R_PLAN, "rate_limited": 2 * R_PLAN}


def test_a_keys_own_rpm_cap_admits_exactly_its_cap(portal):
    server, keys, database_url, _ = portal
    answers = _burst(server.url, keys["key-rpm"], 3 * R_KEY)
    assert _statuses(answers) == {200: R_KEY, 429: 2 * R_KEY}
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "rate_limit_exceeded"
    }
    assert len(_records_for(database_url, answers)) == 3 * R_KEY


def test_a_keys_own_tpm_cap_is_never_overrun(portal):
    server, keys, database_url, _ = portal
    answers = _burst(server.url, keys["key-tpm"], 20, max_tokens=40)
    statuses = _statuses(answers)
    assert set(statuses) == {200, 429} and statuses[200] >= 1
    records = _records_for(database_url, answers)
    admitted_tokens = sum(row["total_tokens"] for row in records if row["outcome"] == "ok")
    assert 0 < admitted_tokens <= TPM_KEY
    assert Counter(row["outcome"] for row in records)["ok"] == statuses[200]


def _router_in_flight(sim_url: str) -> int:
    return requests.get(
        f"{sim_url}/api/v1/status",
        headers={"Authorization": "Bearer default-dev-token"},
        timeout=10,
    ).json()["in_flight"]


def test_never_more_than_c_requests_in_flight(portal):
    server, keys, database_url, sim = portal
    sim_url = sim.url
    highest = 0
    done = threading.Event()

    def watch():
        nonlocal highest
        while not done.is_set():
            highest = max(highest, _router_in_flight(sim_url))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = _burst(server.url, keys["concurrent"], 4 * CONCURRENT)
    finally:
        done.set()
        watcher.join()
    # Each admitted request holds its slot HOLD_MS at the router, longer than the burst takes
    # to arrive: exactly C get in, the rest are refused while the slots are taken.
    assert highest == CONCURRENT
    assert _statuses(answers) == {200: CONCURRENT, 429: 3 * CONCURRENT}
    assert len(_records_for(database_url, answers)) == 4 * CONCURRENT


def test_a_finished_request_frees_its_slot_for_the_next_one_at_once(portal):
    """One request at a time: each next request, sent when the previous answer is complete,
    is admitted (its slot must not wait for the usage writer's next batch)."""
    server, keys, database_url, _ = portal
    session = requests.Session()
    answers = [
        session.post(
            f"{server.url}/v1/chat/completions",
            timeout=60,
            headers={"Authorization": f"Bearer {keys['one-at-a-time']}"},
            json={"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]},
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert len(_records_for(database_url, answers)) == 3
