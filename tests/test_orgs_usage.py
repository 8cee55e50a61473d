"""An organization's usage: `GET /v1/usage` shows the organization's totals beside the key's,
and the usage page its totals with a breakdown by key, by model and by member."""

from __future__ import annotations

from datetime import UTC

import pytest
from django.utils import timezone

from accounts.models import Role
from accounts.services import member_add, org_create
from metering.models import DailyUsage
from metering.services import usage_aggregate
from tests.builders import QWEN, usage_record


@pytest.fixture
def team(alice, bob, make_key, plan):
    """alice owns Acme; bob is a member. Each has a key of Acme; alice one of her own too."""
    org = org_create(name="Acme", owner=alice, plan=plan)
    member_add(org=org, user=bob, role=Role.MEMBER)
    alice_key, alice_raw = make_key(alice, "acme-alice", org=org)
    bob_key, bob_raw = make_key(bob, "acme-bob", org=org)
    personal, _ = make_key(alice, "alice-personal")
    usage_record(alice, alice_key, prompt=10, completion=10)
    usage_record(bob, bob_key, prompt=100, completion=0, model=QWEN)
    usage_record(bob, bob_key, prompt=1, completion=1)
    usage_record(alice, personal, prompt=1000, completion=0)  # not Acme's
    return {"org": org, "alice_raw": alice_raw, "bob_raw": bob_raw, "bob_key": bob_key}


@pytest.mark.parametrize("aggregated", [False, True])
def test_v1_usage_adds_the_organization_beside_the_key(client, catalog, team, aggregated):
    if aggregated:
        usage_aggregate()
    body = client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {team['bob_raw']}").json()
    assert body["key"]["today"] == {"requests": 2, "tokens": 102}
    assert body["organization"] == {
        "id": team["org"].slug,
        "name": "Acme",
        "today": {"requests": 3, "tokens": 122},
        "month": {"requests": 3, "tokens": 122},
    }
    assert body["limits"]["requests_per_minute"]["limit"] == 1000


def test_ledgers_carry_the_organization(team):
    usage_aggregate()
    today = timezone.now().astimezone(UTC).date()
    rows = DailyUsage.objects.filter(org=team["org"], day=today)
    assert sum(r.requests for r in rows) == 3
    assert {r.user.email for r in rows} == {"alice@example.com", "bob@example.com"}


def test_the_usage_page_breaks_the_organization_down_by_key_model_and_member(client, bob, team):
    client.force_login(bob)
    client.post("/org/switch", {"org": team["org"].slug})
    response = client.get("/usage")
    page = response.content.decode()
    assert "Usage of Acme" in page
    overview = response.context["overview"]
    assert overview.today.requests == 3
    members = dict((name, tokens) for name, _, tokens in response.context["by_member"])
    assert members == {"bob@example.com": 102, "alice@example.com": 20}
    keys = {name.split(" (")[0] for name, _, _ in response.context["by_key"]}
    assert keys == {"acme-alice", "acme-bob"}
    assert set(overview.by_model) == {"cortensor/llama-3.1-8b", QWEN}
    assert "alice-personal" not in page
