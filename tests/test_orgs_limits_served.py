"""The plan's limits apply to the organization as a whole, exactly, across processes: an
organization on a plan of 30 requests a day, with three keys held by three members, takes 150
concurrent calls spread over the keys through two gunicorn workers on PostgreSQL and Redis,
and admits exactly 30. Every answer leaves exactly one usage record, carrying the
organization, and each key's own creator. Removing a member then makes their key answer 401
in both workers at once."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.routersim import RouterSim
from tests.servehelpers import (
    MODEL,
    Gunicorn,
    Output,
    config_file,
    db_query,
    manage,
    manage_many,
    provision,
)
from tests.test_limits_served import _records_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("REDIS_URL"),
        reason="exactness across processes needs PostgreSQL and Redis (CI sets both)",
    ),
]

DAILY = 30
CALLS = 150
MEMBERS = ("owner", "admin", "member")


@pytest.fixture(scope="module")
def team():
    sim = RouterSim("--latency-ms", "200", "--chunks", "2")
    database_url, _ = provision(sim, email=f"orgs-base-{uuid.uuid4().hex[:6]}@example.com")
    run = uuid.uuid4().hex[:6]
    plan = f"team-{run}"
    emails = {role: f"{role}-{run}@example.com" for role in MEMBERS}
    config = {"plans": [{"name": plan, "models": ["*"], "requests_per_day": DAILY}]}
    with config_file(config) as path:
        _, slug, *_, owner_key, admin_key, member_key = manage_many(
            ["apply_config", path],
            [
                "org_create",
                "--name",
                f"Acme {run}",
                "--owner-email",
                emails["owner"],
                "--plan",
                plan,
                "--create-user",
            ],
            *(
                [
                    "org_add_member",
                    "--org",
                    Output(1),
                    "--email",
                    emails[role],
                    "--role",
                    role,
                    "--create-user",
                ]
                for role in ("admin", "member")
            ),
            *(
                [
                    "apikey_create",
                    "--email",
                    emails[role],
                    "--org",
                    Output(1),
                    "--name",
                    f"{role}'s key",
                ]
                for role in MEMBERS
            ),
            database_url=database_url,
        )
    slug = slug.strip()
    keys = dict(zip(MEMBERS, (k.strip() for k in (owner_key, admin_key, member_key)), strict=True))
    server = Gunicorn(database_url=database_url, workers=2)
    yield server, keys, slug, database_url
    server.stop()
    sim.stop()


def test_a_plan_of_30_a_day_admits_exactly_30_of_150_calls_over_three_members_keys(team):
    server, keys, slug, database_url = team
    spread = [keys[MEMBERS[n % 3]] for n in range(CALLS)]
    barrier = threading.Barrier(CALLS)

    def one(key):
        barrier.wait()
        return requests.post(
            f"{server.url}/v1/chat/completions",
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
            json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        )

    with ThreadPoolExecutor(CALLS) as pool:
        answers = list(pool.map(one, spread))

    assert Counter(a.status_code for a in answers) == {200: DAILY, 429: CALLS - DAILY}
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "insufficient_quota"
    }
    # Each member's key got some of the 30: the quota is the organization's, not a key's.
    admitted_by = Counter(
        key for key, answer in zip(spread, answers, strict=True) if answer.status_code == 200
    )
    assert sum(admitted_by.values()) == DAILY
    records = _records_for(database_url, answers)
    assert Counter(r["outcome"] for r in records) == {"ok": DAILY, "rate_limited": CALLS - DAILY}
    orgs = db_query(
        database_url,
        "SELECT DISTINCT r.org_id, o.slug, count(DISTINCT r.user_id) AS members "
        "FROM metering_usagerecord r JOIN accounts_organization o ON o.id = r.org_id "
        "WHERE r.request_id = ANY(%s) GROUP BY r.org_id, o.slug",
        [[a.headers["x-request-id"] for a in answers]],
    )
    assert [(row["slug"], row["members"]) for row in orgs] == [(slug, 3)]

    # /v1/usage: the organization's totals beside the key's, and the plan's limit used up.
    usage = requests.get(
        f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {keys['member']}"}, timeout=30
    ).json()
    assert usage["organization"]["id"] == slug
    assert usage["limits"]["requests_per_day"]["used"] == DAILY
    assert usage["limits"]["requests_per_day"]["remaining"] == 0


def test_a_removed_members_key_answers_401_in_every_worker(team):
    server, keys, slug, database_url = team

    def calls(key: str) -> set[int]:
        # Enough calls that both workers answer some (each worker has its own memory).
        return {
            requests.get(
                f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
            ).status_code
            for _ in range(12)
        }

    assert calls(keys["member"]) == {200}
    manage(
        "shell",
        "-c",
        "from accounts.models import Membership; from accounts.services import member_remove; "
        f"rows = Membership.objects.select_related('org', 'user').filter(org__slug={slug!r}); "
        "member_remove(actor=rows.get(role='owner'), membership=rows.get(role='member'))",
        database_url=database_url,
    )
    assert calls(keys["member"]) == {401}
    assert calls(keys["admin"]) == {200}  # the others' keys keep working
