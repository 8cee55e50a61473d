"""Key edits and rotations reach every process: a served portal (gunicorn, two workers, on
PostgreSQL and Redis), changed by another process (`manage.py`, as support or a second web
node would), answers by the new settings on its next request.

- a budget set on a key binds on the next requests: exactly that many pass, then a 429
  naming the key's budget, while the organization's other key goes on;
- a rotated key's old secret works until its grace ends and answers 401 on the first request
  after it; the new secret works throughout.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests

from tests.routersim import RouterSim
from tests.servehelpers import MODEL, Gunicorn, db_query, manage, provision

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="across processes needs PostgreSQL and Redis (CI sets both)",
    ),
]

GRACE_SECONDS = 3


@pytest.fixture(scope="module")
def portal():
    sim = RouterSim()
    email = f"keys-served-{uuid.uuid4().hex[:6]}@example.com"
    database_url, key = provision(sim, email=email)
    other = manage(
        "apikey_create", "--email", email, "--name", "other", database_url=database_url
    ).strip()
    server = Gunicorn(database_url=database_url, workers=2)
    yield server, database_url, key, other
    server.stop()
    sim.stop()


def _chat(url: str, key: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    )


def _models(url: str, key: str) -> requests.Response:
    return requests.get(f"{url}/v1/models", timeout=30, headers={"Authorization": f"Bearer {key}"})


def _public_id(raw: str) -> str:
    return raw.split("_")[1]


def test_a_budget_set_in_another_process_binds_on_the_next_requests(portal):
    server, database_url, key, other = portal
    assert _chat(server.url, key).status_code == 200  # its entry is cached in the workers now
    manage(
        "shell",
        "-c",
        "from apikeys.models import ApiKey; from apikeys.services import apikey_update; "
        f"apikey_update(key=ApiKey.objects.get(public_id={_public_id(key)!r}), "
        "requests_per_day=3, actor_label='test')",
        database_url=database_url,
    )
    # The key has used 1 of its 3 today: 2 more pass (whichever worker answers), then 429.
    answers = [_chat(server.url, key) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert answers[1].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[1].headers["x-ratelimit-remaining-requests"] == "0"
    error = answers[2].json()["error"]
    assert error["code"] == "insufficient_quota"
    assert error["param"] == "requests_per_day"
    assert "this key's daily request budget of 3" in error["message"]
    assert _chat(server.url, other).status_code == 200  # the organization goes on


def test_the_old_secret_works_until_the_grace_ends_then_answers_401(portal):
    server, database_url, _, other = portal
    assert _models(server.url, other).status_code == 200
    new = manage(
        "apikey_rotate",
        "--key",
        other,
        "--grace-seconds",
        str(GRACE_SECONDS),
        database_url=database_url,
    ).strip()
    [row] = db_query(
        database_url,
        "SELECT extract(epoch FROM previous_valid_until) AS until FROM apikeys_apikey "
        "WHERE public_id = %s",
        [_public_id(other)],
    )
    until = float(row["until"])
    assert _models(server.url, new).status_code == 200
    # Ask with the old secret until the grace is over (a deadline, not a sleep): every answer
    # that came back before it ended is a 200, the first request sent after it is a 401.
    deadline = time.monotonic() + GRACE_SECONDS + 30
    while time.monotonic() < deadline:
        sent = time.time()
        answer = _models(server.url, other)
        answered = time.time()
        if sent > until:
            assert answer.status_code == 401, answer.text
            assert "rotated" in answer.json()["error"]["message"]
            break
        if answered < until:
            assert answer.status_code == 200, answer.text
        time.sleep(0.05)
    else:
        pytest.fail("the grace never ended")
    assert _models(server.url, new).status_code == 200
    assert _chat(server.url, new).status_code == 200
