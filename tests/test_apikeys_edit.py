"""Editing a key (PATCH /api/keys/<id>): name, models, caps, budgets and expiry change in
place, each change is audited with its before/after diff, a budget can only narrow the plan,
and the next request (from the key's cache entry, rewritten after commit) sees the change."""

from __future__ import annotations

import pytest

from accounts.models import Plan
from apikeys.models import ApiKeyEvent
from apikeys.services import apikey_authenticate


@pytest.fixture
def models_(db):
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="keys-edit")
    CatalogModel.objects.create(public_id="cortensor/llama-3.1-8b", pool=pool)
    CatalogModel.objects.create(public_id="cortensor/qwen-2.5-7b", pool=pool)


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def patch(client, key, body):
    return client.patch(f"/api/keys/{key.pk}", body, content_type="application/json")


def test_patch_changes_only_what_is_sent_and_audits_the_diff(
    as_alice, alice, alice_key, models_, django_capture_on_commit_callbacks
):
    key, raw = alice_key
    apikey_authenticate(raw_key=raw)  # the entry is cached before the change

    with django_capture_on_commit_callbacks(execute=True):
        response = patch(as_alice, key, {
            "name": "batch jobs", "models": ["cortensor/qwen-2.5-7b"],
            "requests_per_minute": 30, "requests_per_day": 25, "tokens_per_month": 90_000,
            "expires_at": "2999-01-01T00:00:00Z",
        })  # fmt: skip

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["name"], body["models"]) == (
        key.pk,
        "batch jobs",
        ["cortensor/qwen-2.5-7b"],
    )
    assert (body["requests_per_day"], body["tokens_per_month"]) == (25, 90_000)
    assert (body["tokens_per_day"], body["requests_per_month"]) == (None, None)
    event = ApiKeyEvent.objects.get(key=key, kind="updated")
    assert event.actor_id == alice.pk
    assert event.changes == {
        "name": ["alice's key", "batch jobs"],
        "allowed_models": [[], ["cortensor/qwen-2.5-7b"]],
        "requests_per_minute": [None, 30],
        "requests_per_day": [None, 25],
        "tokens_per_month": [None, 90_000],
        "expires_at": [None, "2999-01-01T00:00:00+00:00"],
    }
    # The cached entry was rewritten: the next request carries the new settings.
    principal = apikey_authenticate(raw_key=raw)
    assert principal.requests_per_day == 25
    assert principal.tokens_per_month == 90_000
    assert principal.requests_per_minute == 30
    assert principal.allowed_models == frozenset({"cortensor/qwen-2.5-7b"})


def test_null_clears_a_budget_and_an_unchanged_patch_records_nothing(
    as_alice, alice_key, django_capture_on_commit_callbacks
):
    key, raw = alice_key
    assert patch(as_alice, key, {"tokens_per_day": 5000}).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = patch(as_alice, key, {"tokens_per_day": None})
    assert response.json()["tokens_per_day"] is None
    assert [e.changes for e in ApiKeyEvent.objects.filter(key=key, kind="updated")] == [
        {"tokens_per_day": [5000, None]},
        {"tokens_per_day": [None, 5000]},
    ]
    assert apikey_authenticate(raw_key=raw).tokens_per_day is None
    # The same value again: nothing changed, nothing recorded.
    assert patch(as_alice, key, {"tokens_per_day": None, "name": key.name}).status_code == 200
    assert ApiKeyEvent.objects.filter(key=key, kind="updated").count() == 2


def test_a_budget_can_only_narrow_the_plan(as_alice, alice_key, plan):
    Plan.objects.filter(pk=plan.pk).update(requests_per_day=100)
    key, _ = alice_key

    refused = patch(as_alice, key, {"requests_per_day": 101})

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request_error", "requests_per_day")
    assert "can only narrow the plan" in error["message"]
    assert patch(as_alice, key, {"requests_per_day": 100}).status_code == 200
    # The plan has no monthly quota: any budget narrows it.
    assert patch(as_alice, key, {"requests_per_month": 10**6}).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"requests_per_day": 0}, "requests_per_day"),
        ({"tokens_per_day": -5}, "tokens_per_day"),
        ({"requests_per_month": 2**40}, "requests_per_month"),
        ({"tokens_per_month": "lots"}, "tokens_per_month"),
        ({"name": ""}, "name"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"models": ["cortensor/nope"]}, "models"),
        ({"secret_hash": "x"}, "secret_hash"),
    ],
)
def test_bad_edits_are_400_naming_the_field(as_alice, alice_key, body, param):
    key, _ = alice_key
    response = patch(as_alice, key, body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert not ApiKeyEvent.objects.filter(key=key, kind="updated").exists()


def test_a_body_that_is_not_an_object_is_400(as_alice, alice_key):
    key, _ = alice_key
    response = as_alice.patch(f"/api/keys/{key.pk}", "[1, 2]", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_plain_member_edits_their_own_keys_only(client, alice, bob, make_key):
    from accounts.services import member_add, org_create

    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role="member")
    alices, _ = make_key(alice, "alice's", org=org)
    bobs, _ = make_key(bob, "bob's", org=org)
    client.force_login(bob)
    url = f"/api/orgs/{org.slug}/keys/"

    assert client.patch(f"{url}{alices.pk}", {"name": "x"}, "application/json").status_code == 404
    assert client.patch(f"{url}{bobs.pk}", {"name": "y"}, "application/json").status_code == 200
