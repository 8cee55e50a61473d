"""Invitations: by email (allauth's mail, the portal's layout), with a role, single use, for
7 days, revocable, throttled per organization; accepting needs a verified email equal to the
invited one."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.utils import timezone

from accounts.models import INVITATION_DAYS, Invitation, Membership, Role
from accounts.services import INVITATIONS_PER_HOUR, invitation_create, member_add, org_create

pytestmark = pytest.mark.django_db(transaction=True)
LINK = re.compile(r"(https?://\S+/org/join/\S+)")


@pytest.fixture
def acme(alice):
    return org_create(name="Acme", owner=alice)


@pytest.fixture
def as_alice_in_acme(client, alice, acme):
    client.force_login(alice)
    client.post("/org/switch", {"org": acme.slug})
    return client


def _invite(client, email="dana@example.com", role="member"):
    response = client.post("/org/invitations", {"email": email, "role": role})
    assert response.status_code == 302, response.content.decode()[:500]
    message = mail.outbox[-1]
    return message, LINK.search(message.body).group(1)


def test_the_invitation_mail_has_the_portal_layout_and_a_single_use_link(as_alice_in_acme, acme):
    message, link = _invite(as_alice_in_acme)
    assert message.to == ["dana@example.com"]
    assert "Acme" in message.subject
    assert message.body.startswith("Hello from Cortensor Portal!")  # base_message.txt
    assert "valid for 7 days" in message.body
    invitation = Invitation.objects.get()
    assert invitation.role == Role.MEMBER
    assert invitation.expires_at - timezone.now() > timedelta(days=INVITATION_DAYS - 1)
    token = link.rsplit("/", 1)[1]
    assert token not in invitation.token_hash  # only a hash is stored


def test_accepting_needs_the_invited_verified_address(client, as_alice_in_acme, acme, make_user):
    _, link = _invite(as_alice_in_acme)
    path = link.split("testserver", 1)[-1]
    eve = make_user("eve@example.com")
    client.force_login(eve)
    refused = client.post(path)
    assert refused.status_code == 403
    assert not Membership.objects.filter(org=acme, user=eve).exists()

    dana = make_user("dana@example.com", verified=False)
    EmailAddress.objects.create(user=dana, email="dana@example.com", verified=False, primary=True)
    client.force_login(dana)
    assert client.post(path).status_code == 403  # not verified yet
    EmailAddress.objects.filter(user=dana).update(verified=True)
    joined = client.post(path)
    assert joined.status_code == 302
    assert Membership.objects.get(org=acme, user=dana).role == Role.MEMBER
    # The session now acts for the organization she joined.
    assert "Acme" in client.get("/keys").content.decode()

    again = client.post(path)  # single use
    assert again.status_code == 400
    assert "used already" in again.content.decode()


def test_a_logged_out_visitor_is_sent_to_sign_up_and_back(client, as_alice_in_acme):
    _, link = _invite(as_alice_in_acme)
    path = link.split("testserver", 1)[-1]
    client.logout()
    page = client.get(path).content.decode()
    assert "/accounts/signup/?next=" in page and "dana@example.com" in page


def test_an_expired_or_revoked_invitation_cannot_be_used(client, as_alice_in_acme, acme, make_user):
    _, link = _invite(as_alice_in_acme)
    path = link.split("testserver", 1)[-1]
    dana = make_user("dana@example.com")
    invitation = Invitation.objects.get()
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
    client.force_login(dana)
    assert client.post(path).status_code == 400

    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() + timedelta(days=1)
    )
    as_alice_in_acme.force_login(acme.memberships.get(role="owner").user)
    as_alice_in_acme.post("/org/switch", {"org": acme.slug})
    as_alice_in_acme.post(f"/org/invitations/{invitation.pk}/revoke")
    client.force_login(dana)
    assert client.post(path).status_code == 404
    assert not Membership.objects.filter(org=acme, user=dana).exists()


def test_invitations_are_throttled_per_organization(acme, alice):
    actor = Membership.objects.select_related("org", "user").get(org=acme, user=alice)
    for n in range(INVITATIONS_PER_HOUR):
        invitation_create(actor=actor, email=f"p{n}@example.com", role="member")
    from core.errors import RateLimited

    with pytest.raises(RateLimited):
        invitation_create(actor=actor, email="one-more@example.com", role="member")


def test_only_admins_invite_and_only_owners_invite_owners(acme, alice, bob, make_user):
    from core.errors import PermissionDeniedError

    carol = make_user("carol@example.com")
    member_add(org=acme, user=bob, role=Role.ADMIN)
    member_add(org=acme, user=carol, role=Role.MEMBER)
    bob_m = Membership.objects.select_related("org", "user").get(org=acme, user=bob)
    carol_m = Membership.objects.select_related("org", "user").get(org=acme, user=carol)
    invitation_create(actor=bob_m, email="x@example.com", role="admin")
    with pytest.raises(PermissionDeniedError):
        invitation_create(actor=bob_m, email="y@example.com", role="owner")
    with pytest.raises(PermissionDeniedError):
        invitation_create(actor=carol_m, email="z@example.com", role="member")


def test_the_api_invites_lists_and_revokes(client, alice, acme):
    client.force_login(alice)
    created = client.post(
        f"/api/orgs/{acme.slug}/invitations",
        {"email": "api@example.com", "role": "admin"},
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["email"], body["role"], body["status"]) == ("api@example.com", "admin", "pending")
    assert mail.outbox[-1].to == ["api@example.com"]
    listed = client.get(f"/api/orgs/{acme.slug}/invitations").json()["data"]
    assert [i["id"] for i in listed] == [body["id"]]
    revoked = client.delete(f"/api/orgs/{acme.slug}/invitations/{body['id']}")
    assert revoked.json()["status"] == "revoked"
    bad = client.post(
        f"/api/orgs/{acme.slug}/invitations",
        {"email": "not-an-email"},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "email"
