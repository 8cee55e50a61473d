"""Organizations as their members meet them: a personal one from sign-up, roles that decide
who may do what (checked on the server), keys owned by the organization, and removing a member
revoking the keys they created, so their next request answers 401."""

from __future__ import annotations

import pytest

from accounts.models import Membership, Organization, Role
from accounts.selectors import personal_org
from accounts.services import member_add, member_remove, member_set_role, org_create
from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate
from core.errors import InvalidApiKey, InvalidRequest, PermissionDeniedError

# Real commits: cache entries are rewritten after commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(alice, bob, make_user):
    """alice owns Acme; bob is an admin; carol a member."""
    carol = make_user("carol@example.com")
    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role=Role.ADMIN)
    member_add(org=org, user=carol, role=Role.MEMBER)
    return {"org": org, "alice": alice, "bob": bob, "carol": carol}


def _m(org, user) -> Membership:
    return Membership.objects.select_related("org", "user").get(org=org, user=user)


def test_every_user_has_a_personal_organization_they_own(alice, plan):
    org = personal_org(alice)
    assert org.personal
    assert org.plan == plan  # the default plan, as sign-ups had before
    assert _m(org, alice).role == Role.OWNER


def test_a_key_belongs_to_an_organization_and_remembers_its_creator(acme, make_key):
    key, raw = make_key(acme["carol"], "ci", org=acme["org"])
    assert (key.org, key.owner) == (acme["org"], acme["carol"])
    principal = apikey_authenticate(raw_key=raw)
    assert (principal.org_id, principal.owner_id) == (acme["org"].pk, acme["carol"].pk)


def test_only_members_create_keys_of_an_organization(acme, make_user, make_key):
    dave = make_user("dave@example.com")
    with pytest.raises(InvalidRequest, match="member"):
        make_key(dave, "sneaky", org=acme["org"])


def test_removing_a_member_revokes_their_keys_at_once(acme, make_key):
    org = acme["org"]
    carols, raw = make_key(acme["carol"], "carol's", org=org)
    bobs, bob_raw = make_key(acme["bob"], "bob's", org=org)
    personal, personal_raw = make_key(acme["carol"], "her own")  # her personal organization
    apikey_authenticate(raw_key=raw)  # cached: the removal must rewrite the entry

    member_remove(actor=_m(org, acme["alice"]), membership=_m(org, acme["carol"]))

    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)
    carols.refresh_from_db()
    assert carols.revoked_at is not None
    assert apikey_authenticate(raw_key=bob_raw).key_id == bobs.pk  # others' keys keep working
    assert apikey_authenticate(raw_key=personal_raw).key_id == personal.pk
    assert not Membership.objects.filter(org=org, user=acme["carol"]).exists()


def test_a_member_cannot_remove_or_promote_others(acme):
    org = acme["org"]
    carol = _m(org, acme["carol"])
    with pytest.raises(PermissionDeniedError):
        member_remove(actor=carol, membership=_m(org, acme["bob"]))
    with pytest.raises(PermissionDeniedError):
        member_set_role(actor=carol, membership=carol, role=Role.ADMIN)


def test_an_admin_manages_members_but_not_owners(acme):
    org = acme["org"]
    bob = _m(org, acme["bob"])
    member_set_role(actor=bob, membership=_m(org, acme["carol"]), role=Role.ADMIN)
    with pytest.raises(PermissionDeniedError):
        member_remove(actor=bob, membership=_m(org, acme["alice"]))
    with pytest.raises(PermissionDeniedError):
        member_set_role(actor=bob, membership=bob, role=Role.OWNER)


def test_there_is_always_an_owner(acme):
    org = acme["org"]
    alice = _m(org, acme["alice"])
    with pytest.raises(InvalidRequest, match="owner"):
        member_set_role(actor=alice, membership=alice, role=Role.ADMIN)
    with pytest.raises(InvalidRequest, match="owner"):
        member_remove(actor=alice, membership=alice)
    member_set_role(actor=alice, membership=_m(org, acme["bob"]), role=Role.OWNER)
    member_remove(actor=alice, membership=alice)  # now she may leave
    assert list(Membership.objects.filter(org=org, role=Role.OWNER).values_list("user", flat=True))


def test_suspending_an_organization_refuses_all_its_keys(acme, make_key):
    from accounts.services import orgs_set_suspended

    org = acme["org"]
    _, raw_a = make_key(acme["alice"], "a", org=org)
    _, raw_c = make_key(acme["carol"], "c", org=org)
    apikey_authenticate(raw_key=raw_a)
    orgs_set_suspended(orgs=Organization.objects.filter(pk=org.pk), suspended=True)
    for raw in (raw_a, raw_c):
        with pytest.raises(InvalidApiKey):
            apikey_authenticate(raw_key=raw)
    orgs_set_suspended(orgs=Organization.objects.filter(pk=org.pk), suspended=False)
    assert apikey_authenticate(raw_key=raw_a)


def test_a_plan_change_reaches_the_cached_keys(acme, make_key):
    from accounts.models import Plan
    from accounts.services import org_set_plan

    _, raw = make_key(acme["carol"], "c", org=acme["org"])
    apikey_authenticate(raw_key=raw)
    pro = Plan.objects.create(name="pro")
    org_set_plan(orgs=Organization.objects.filter(pk=acme["org"].pk), plan=pro)
    assert apikey_authenticate(raw_key=raw).plan_id == pro.pk


# --- the pages ------------------------------------------------------------------------------


def test_member_removal_is_confirmed_in_the_ui(client, acme, make_key):
    org = acme["org"]
    _key, raw = make_key(acme["carol"], "carol's", org=org)
    client.force_login(acme["alice"])
    client.post("/org/switch", {"org": org.slug})
    target = _m(org, acme["carol"])

    page = client.get(f"/org/members/{target.pk}/remove")
    assert page.status_code == 200
    assert "revoked at once" in page.content.decode()
    unconfirmed = client.post(f"/org/members/{target.pk}/remove", {})
    assert unconfirmed.status_code == 400
    assert Membership.objects.filter(pk=target.pk).exists()

    done = client.post(f"/org/members/{target.pk}/remove", {"confirm": "on"})
    assert done.status_code == 302
    assert not Membership.objects.filter(pk=target.pk).exists()
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def test_pages_act_for_the_current_organization(client, acme, make_key):
    org = acme["org"]
    make_key(acme["carol"], "acme-carol-key", org=org)
    make_key(acme["bob"], "acme-bob-key", org=org)
    make_key(acme["carol"], "carol-personal-key")
    client.force_login(acme["carol"])

    personal = client.get("/keys").content.decode()
    assert "carol-personal-key" in personal and "acme-carol-key" not in personal
    client.post("/org/switch", {"org": org.slug})
    team = client.get("/keys").content.decode()
    # A member sees their own keys of the organization, not another member's.
    assert "acme-carol-key" in team
    assert "acme-bob-key" not in team and "carol-personal-key" not in team
    client.post("/keys", {"name": "made-in-acme", "expires": "never", "nonce": "n1"})
    assert ApiKey.objects.get(name="made-in-acme").org == org

    client.force_login(acme["bob"])  # an admin sees all of the organization's keys
    client.post("/org/switch", {"org": org.slug})
    admin_view = client.get("/keys").content.decode()
    assert "acme-carol-key" in admin_view and "acme-bob-key" in admin_view


def test_the_switcher_shows_only_with_several_organizations(client, alice, acme, make_user):
    loner = make_user("loner@example.com")
    client.force_login(loner)
    assert 'id="org-switcher"' not in client.get("/dashboard").content.decode()
    client.force_login(alice)
    page = client.get("/dashboard").content.decode()
    assert 'id="org-switcher"' in page and "Acme" in page


def test_switching_to_someone_elses_organization_is_404(client, acme, make_user):
    outsider = make_user("outsider@example.com")
    client.force_login(outsider)
    assert client.post("/org/switch", {"org": acme["org"].slug}).status_code == 404


def test_a_member_does_not_reach_admin_actions(client, acme):
    org = acme["org"]
    client.force_login(acme["carol"])
    client.post("/org/switch", {"org": org.slug})
    bob = _m(org, acme["bob"])
    assert client.post(f"/org/members/{bob.pk}/remove", {"confirm": "on"}).status_code == 404
    assert client.post(f"/org/members/{bob.pk}/role", {"role": "member"}).status_code == 404
    assert (
        client.post("/org/invitations", {"email": "x@example.com", "role": "member"}).status_code
        == 404
    )
    assert _m(org, acme["bob"]).role == Role.ADMIN
    page = client.get("/org").content.decode()
    assert "Send invitation" not in page


def test_org_api_keys_members_and_error_shape(client, acme, make_key):
    org = acme["org"]
    bobs, _ = make_key(acme["bob"], "bobs", org=org)
    client.force_login(acme["carol"])
    members = client.get(f"/api/orgs/{org.slug}/members").json()["data"]
    assert {m["email"] for m in members} == {
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    }
    created = client.post(
        f"/api/orgs/{org.slug}/keys", {"name": "api-made"}, content_type="application/json"
    )
    assert created.status_code == 201 and created.json()["key"].startswith("ctsk_")
    # Bob's key, by its id: not hers to see.
    hidden = client.get(f"/api/orgs/{org.slug}/keys/{bobs.pk}")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    denied = client.get(f"/api/orgs/{org.slug}/invitations")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"
    bad = client.patch(
        f"/api/orgs/{org.slug}/members/{_m(org, acme['carol']).pk}",
        {"role": "emperor"},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "role"


def test_the_org_routes_are_in_the_openapi_schema(client, db):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/orgs/{slug}/members",
        "/api/orgs/{slug}/members/{member_id}",
        "/api/orgs/{slug}/invitations",
        "/api/orgs/{slug}/invitations/{invitation_id}",
        "/api/orgs/{slug}/keys",
        "/api/orgs/{slug}/keys/{key_id}",
        "/api/orgs/{slug}/keys/{key_id}/revoke",
    ):
        assert path in paths, path
    usage = client.get("/openapi.json").json()["components"]["schemas"]["Usage"]
    assert "organization" in usage["properties"]


def test_a_member_never_reaches_another_members_key(client, acme, make_key):
    """Inside one organization: carol (member) and bob's key, by every key route."""
    org = acme["org"]
    bobs, _ = make_key(acme["bob"], "acme-bob-secret-project", org=org)
    client.force_login(acme["carol"])
    client.post("/org/switch", {"org": org.slug})
    for method, path in (
        ("get", f"/keys/{bobs.pk}/revoke"),
        ("post", f"/keys/{bobs.pk}/revoke"),
        ("get", f"/api/keys/{bobs.pk}"),
        ("delete", f"/api/keys/{bobs.pk}"),
        ("post", f"/api/keys/{bobs.pk}/revoke"),
        ("get", f"/api/orgs/{org.slug}/keys/{bobs.pk}"),
        ("delete", f"/api/orgs/{org.slug}/keys/{bobs.pk}"),
        ("post", f"/api/orgs/{org.slug}/keys/{bobs.pk}/revoke"),
    ):
        response = getattr(client, method)(path, {"confirm": "on"} if method == "post" else None)
        assert response.status_code == 404, (method, path)
        assert "acme-bob-secret-project" not in response.content.decode()
    listed = client.get(f"/api/orgs/{org.slug}/keys").json()["data"]
    assert bobs.pk not in {key["id"] for key in listed}
    bobs.refresh_from_db()
    assert bobs.revoked_at is None
    # An admin of the organization does reach another member's key (not vacuous).
    carols, _ = make_key(acme["carol"], "carol's", org=org)
    client.force_login(acme["bob"])
    assert client.get(f"/api/orgs/{org.slug}/keys/{carols.pk}").status_code == 200


def test_only_an_owner_deletes_a_team_organization_and_its_keys_stop(client, acme, make_key):
    org = acme["org"]
    _, raw = make_key(acme["carol"], "c", org=org)
    apikey_authenticate(raw_key=raw)
    client.force_login(acme["bob"])  # an admin: not enough
    client.post("/org/switch", {"org": org.slug})
    assert client.post("/org/delete", {"confirm": "on"}).status_code == 404
    client.force_login(acme["alice"])
    client.post("/org/switch", {"org": org.slug})
    assert client.post("/org/delete", {}).status_code == 400  # not confirmed
    assert client.post("/org/delete", {"confirm": "on"}).status_code == 302
    assert not Organization.objects.filter(pk=org.pk).exists()
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)
    client.post("/org/switch", {"org": personal_org(acme["alice"]).slug})
    assert client.get("/org/delete").status_code == 404  # never the personal one


def test_the_playground_acts_for_the_current_organization(client, catalog, acme):
    import json

    from accounts.services import orgs_set_suspended
    from metering.models import UsageRecord

    org = acme["org"]
    client.force_login(acme["carol"])
    client.post("/org/switch", {"org": org.slug})
    turn = json.dumps(
        {"model": "cortensor/llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
    )
    answer = client.post("/playground/chat", data=turn, content_type="application/json")
    assert answer.status_code == 200
    b"".join(answer.streaming_content)
    record = UsageRecord.objects.get()
    assert (record.org_id, record.user_id) == (org.pk, acme["carol"].pk)
    assert ApiKey.objects.get(pk=record.key_id).org == org

    orgs_set_suspended(orgs=Organization.objects.filter(pk=org.pk), suspended=True)
    refused = client.post("/playground/chat", data=turn, content_type="application/json")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
