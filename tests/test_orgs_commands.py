"""Commands for support and scripts: `org_create` prints only the slug, `org_add_member`
adds or re-roles a member, `apikey_create --org` makes a key of an organization and `--plan`
sets that organization's plan."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Membership, Organization, Plan, Role
from accounts.selectors import personal_org
from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate


def _run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def pro(db):
    return Plan.objects.create(name="pro", requests_per_day=99)


def test_org_create_prints_only_the_slug(alice, pro):
    out, err = _run("org_create", "--name", "Acme Corp", "--owner-email", "alice@example.com",
                    "--plan", "pro")  # fmt: skip
    slug = out.strip()
    org = Organization.objects.get(slug=slug)
    assert out == slug + "\n" and slug.startswith("acme-corp-")
    assert (org.name, org.plan, org.personal) == ("Acme Corp", pro, False)
    assert Membership.objects.get(org=org).role == Role.OWNER
    assert "Acme Corp" in err


def test_org_create_can_create_the_owner(db, plan):
    out, _ = _run("org_create", "--name", "Solo", "--owner-email", "new@example.com",
                  "--create-user")  # fmt: skip
    org = Organization.objects.get(slug=out.strip())
    assert org.memberships.get().user.email == "new@example.com"
    with pytest.raises(CommandError, match="--create-user"):
        _run("org_create", "--name", "X", "--owner-email", "ghost@example.com")
    with pytest.raises(CommandError, match="No plan named"):
        _run("org_create", "--name", "X", "--owner-email", "new@example.com", "--plan", "nope")


def test_org_add_member_and_apikey_create_in_the_organization(alice, bob, pro):
    slug = _run("org_create", "--name", "Acme", "--owner-email", "alice@example.com")[0].strip()
    _run("org_add_member", "--org", slug, "--email", "bob@example.com", "--role", "admin")
    org = Organization.objects.get(slug=slug)
    assert Membership.objects.get(org=org, user=bob).role == Role.ADMIN
    _run("org_add_member", "--org", slug, "--email", "bob@example.com", "--role", "member")
    assert Membership.objects.get(org=org, user=bob).role == Role.MEMBER

    raw, _ = _run("apikey_create", "--email", "bob@example.com", "--name", "ci", "--org", slug,
                  "--plan", "pro")  # fmt: skip
    key = ApiKey.objects.get(name="ci")
    assert (key.org, key.owner) == (org, bob)
    org.refresh_from_db()
    assert org.plan == pro  # --plan sets the plan of the key's organization
    assert personal_org(bob).plan != pro
    assert apikey_authenticate(raw_key=raw.strip()).org_id == org.pk

    with pytest.raises(CommandError, match="member"):
        _run("apikey_create", "--email", "staff@example.com", "--name", "x", "--org", slug,
             "--create-user")  # fmt: skip
    with pytest.raises(CommandError, match="No organization"):
        _run("org_add_member", "--org", "nope", "--email", "bob@example.com", "--role", "member")


def test_apikey_create_without_org_uses_the_personal_organization(alice):
    _run("apikey_create", "--email", "alice@example.com", "--name", "mine")
    assert ApiKey.objects.get(name="mine").org == personal_org(alice)
