"""Bob never reaches alice's things: every route that takes an object id answers 404 for hers.

The routes come from the URL resolver. Each route that captures anything from the URL is
either a case here, a named non-id (a one-time token), or part of the admin (staff only,
tested below); a new id-taking route without a case fails
`test_every_route_with_an_id_has_a_case`.
"""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from apikeys.models import ApiKey
from metering.models import UsageRecord
from tests.security_routes import all_routes

# pattern -> the requests bob makes with alice's ids (each must be a 404).
CASES: dict[str, list[tuple[str, dict | None]]] = {
    "keys/<int:key_id>": [("get", None), ("post", {"name": "bob's now", "expires": "keep"})],
    "keys/<int:key_id>/rotate": [("get", None), ("post", {"grace": "0"})],
    "keys/<int:key_id>/revoke": [("get", None), ("post", {"confirm": "on"})],
    "api/keys/<int:key_id>": [("get", None), ("patch", None), ("delete", None)],
    "api/keys/<int:key_id>/revoke": [("post", None)],
    "api/keys/<int:key_id>/rotate": [("post", None)],
    "requests/<str:request_id>": [("get", None)],
    "org/invitations/<int:invitation_id>/revoke": [("post", None)],
    "org/members/<int:member_id>/role": [("post", {"role": "member"})],
    "org/members/<int:member_id>/remove": [("get", None), ("post", {"confirm": "on"})],
    "api/orgs/<slug:slug>/members": [("get", None)],
    "api/orgs/<slug:slug>/members/<int:member_id>": [("patch", None), ("delete", None)],
    "api/orgs/<slug:slug>/invitations": [("get", None), ("post", {"email": "x@example.com"})],
    "api/orgs/<slug:slug>/invitations/<int:invitation_id>": [("delete", None)],
    "api/orgs/<slug:slug>/keys": [("get", None), ("post", {"name": "intruder"})],
    "api/orgs/<slug:slug>/keys/<int:key_id>": [("get", None), ("patch", None), ("delete", None)],
    "api/orgs/<slug:slug>/keys/<int:key_id>/revoke": [("post", None)],
    "api/orgs/<slug:slug>/keys/<int:key_id>/rotate": [("post", None)],
    "notifications/<int:item_id>": [("get", None)],
    "notifications/<int:item_id>/read": [("post", None)],
    "notifications/webhooks/<int:endpoint_id>": [("get", None)],
    "notifications/webhooks/<int:endpoint_id>/<str:action>": [("post", None)],
}
# Captured, but not an object id of a customer.
NOT_OBJECT_IDS = {
    r"^v1/models/(?P<model_id>[A-Za-z0-9._:/-]{1,128})$": (
        "a catalog model id; what a key may see is its plan's (test_models_outside_the_plan_*)"
    ),
    r"accounts/^confirm-email/(?P<key>[-:\w]+)/$": "allauth's signed one-time token",
    r"accounts/^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$": (
        "allauth's uid + one-time token, checked together"
    ),
    "org/join/<str:token>": (
        "an invitation's one-time token (only its hash is stored; tests/test_orgs_invitations.py)"
    ),
    "staff/insights/<slug:name>.csv": "a chart's name; staff only (tests/test_ops_insights.py)",
    "notifications/unsubscribe/<str:token>": (
        "a signed token naming its user and event (tests/test_notifications_pages.py)"
    ),
    "dev/mail/<str:msg_id>/": (
        "the dev mailbox (DEBUG or staff only, 404 otherwise: tests/test_pages_dev_mailbox.py)"
    ),
}
ADMIN = "admin/"


@pytest.fixture
def alices(alice, make_key):
    """Alice's things, named so that a leak is easy to spot."""
    from accounts.models import Invitation, Membership
    from accounts.selectors import personal_org

    key, _ = make_key(alice, "alice-private-project")
    org = personal_org(alice)
    invitation = Invitation.objects.create(
        org=org, email="alice-invitee@example.com", token_hash="0" * 64, invited_by=alice
    )
    UsageRecord.objects.create(
        request_id="req_alice_only_0001",
        user=alice,
        key=key,
        endpoint="chat.completions",
        model="cortensor/llama-3.1-8b",
        outcome="ok",
        http_status=200,
        prompt_tokens=7,
        completion_tokens=5,
        total_tokens=12,
        created_at=timezone.now(),
    )
    from notifications.models import InboxItem, Notification, WebhookEndpoint

    notification = Notification.objects.create(
        org=org, event="key.rotated", subject_kind="key", subject_id=key.pk, title="alice-private"
    )
    item = InboxItem.objects.create(user=alice, notification=notification)
    endpoint = WebhookEndpoint.objects.create(org=org, url="https://alice-private.example/hook")
    return {
        "key": key,
        "values": {
            "key_id": key.pk,
            "slug": org.slug,
            "member_id": Membership.objects.get(org=org, user=alice).pk,
            "invitation_id": invitation.pk,
            "request_id": "req_alice_only_0001",
            "item_id": item.pk,
            "endpoint_id": endpoint.pk,
            "action": "delete",
        },
        "invitation": invitation,
        "marks": [
            alice.email,
            key.public_id,
            "alice-private-project",
            "req_alice_only_0001",
            "alice-invitee@example.com",
            "alice-private",
        ],
    }


@pytest.fixture
def as_bob(client, bob):
    client.force_login(bob)
    return client


def _routes_with_params():
    return [route for route in all_routes() if route.params]


def test_every_route_with_an_id_has_a_case():
    uncovered = [
        f"{route.pattern}  ({route.view})"
        for route in _routes_with_params()
        if route.pattern not in CASES
        and route.pattern not in NOT_OBJECT_IDS
        and not route.pattern.startswith(ADMIN)
    ]
    assert not uncovered, (
        "Routes that take an id from the URL need an isolation case in "
        "tests/test_security_isolation.py (CASES), or a reason in NOT_OBJECT_IDS:\n"
        + "\n".join(uncovered)
    )
    # And no stale cases: each names a route that exists.
    patterns = {route.pattern for route in all_routes()}
    assert set(CASES) <= patterns
    assert set(NOT_OBJECT_IDS) <= patterns


@pytest.mark.parametrize("pattern", list(CASES))
def test_bob_gets_404_for_alices_ids(as_bob, client, alice, alices, pattern):
    route = next(r for r in all_routes() if r.pattern == pattern)
    path = route.path(alices["values"])
    for method, data in CASES[pattern]:
        if method == "get":
            response = as_bob.get(path)
        else:
            response = getattr(as_bob, method)(path, data or {})
        assert response.status_code == 404, (method, path, response.status_code)
        body = response.content.decode()
        for mark in alices["marks"]:
            assert mark not in body, (method, path, mark)
    alices["key"].refresh_from_db()
    assert alices["key"].revoked_at is None
    assert alices["key"].rotated_at is None
    assert alices["key"].name == "alice-private-project"
    alices["invitation"].refresh_from_db()
    assert alices["invitation"].revoked_at is None
    from accounts.models import Membership

    assert Membership.objects.filter(user=alice).count() == 1
    # The same path works for alice (the case is not vacuous).
    if any(method == "get" for method, _ in CASES[pattern]):
        client.force_login(alice)
        assert client.get(path).status_code == 200


def test_a_missing_id_is_the_same_404(as_bob, alices):
    theirs = as_bob.get(f"/api/keys/{alices['key'].pk}")
    missing = as_bob.get(f"/api/keys/{alices['key'].pk + 10_000}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_models_outside_the_plan_are_404_and_unlisted(client, catalog, make_user, make_key):
    from accounts.models import Plan

    narrow = Plan.objects.create(name="narrow", all_models=False, requests_per_minute=100)
    catalog["llama"].plans.add(narrow)
    carol = make_user("carol@example.com", plan_=narrow)
    _, raw = make_key(carol)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    hidden = client.get("/v1/models/cortensor/qwen-2.5-7b", **auth)
    listed = [m["id"] for m in client.get("/v1/models", **auth).json()["data"]]
    chat = client.post(
        "/v1/chat/completions",
        {"model": "cortensor/qwen-2.5-7b", "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
        **auth,
    )

    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "model_not_found"
    assert chat.status_code == 404
    assert listed == ["cortensor/llama-3.1-8b"]
    assert client.get("/v1/models/cortensor/llama-3.1-8b", **auth).status_code == 200


def _admin_values(alice, alices) -> dict:
    return {
        "object_id": alice.pk,
        "id": alice.pk,
        "content_type_id": ContentType.objects.get_for_model(ApiKey).pk,
        "app_label": "accounts",
        "url": "accounts/user/",
        "pk": 1,  # the operator's pages (ops/admin_views.py)
        "action": "drain",
    }


def test_admin_routes_send_non_staff_to_the_admin_login(as_bob, alice, alices):
    values = _admin_values(alice, alices)
    checked = 0
    for route in all_routes():
        if not route.pattern.startswith(ADMIN) or route.name == "login":
            continue
        if "object_id" in route.params:
            values["object_id"] = alices["key"].pk if "/apikey/" in route.pattern else alice.pk
        path = route.path(values)
        response = as_bob.get(path)
        assert response.status_code == 302, (path, response.status_code)
        assert response["Location"].startswith("/admin/"), (path, response["Location"])
        checked += 1
    assert checked > 20  # the admin's routes were really enumerated


def test_staff_reaches_the_same_admin_pages(client, staff, alice, alices):
    client.force_login(staff)
    assert client.get(f"/admin/accounts/user/{alice.pk}/change/").status_code == 200
    assert client.get(f"/admin/apikeys/apikey/{alices['key'].pk}/change/").status_code == 200


def test_pages_and_lists_without_ids_show_bob_only_his_own(as_bob, bob, make_key, alices):
    make_key(bob, "bob's key")
    checked = []
    for route in all_routes():
        if route.params or route.pattern.startswith((ADMIN, "accounts/", "v1/")):
            continue
        response = as_bob.get(route.path())
        if response.status_code != 200:
            continue
        body = b"".join(response) if response.streaming else response.content
        text = body.decode("utf-8", "replace")
        for mark in alices["marks"]:
            assert mark not in text, (route.pattern, mark)
        checked.append(route.pattern)
    assert {"keys", "api/keys", "usage", "usage/export.csv"} <= set(checked), checked


def test_the_marks_are_visible_to_their_owner(client, alice, alices):
    """The leak check above is not vacuous: alice's own pages do show her marks."""
    client.force_login(alice)
    assert "alice-private-project" in client.get("/keys").content.decode()
    assert alices["key"].public_id in client.get("/api/keys").content.decode()


def test_v1_usage_shows_only_the_calling_key(client, catalog, bob, make_key, alices):
    _, raw = make_key(bob, "bob's key")
    body = client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {raw}").content.decode()
    for mark in alices["marks"]:
        assert mark not in body
