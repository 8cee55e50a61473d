"""The operator console for users, organizations and plans: who gets in, and lists that stay
cheap."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.test import Client

from accounts.models import Plan, User
from accounts.selectors import personal_org
from apikeys.services import apikey_authenticate

pytestmark = pytest.mark.django_db

USERS = "/admin/accounts/user/"
ORGS = "/admin/accounts/organization/"
PLANS = "/admin/accounts/plan/"


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def pro(db) -> Plan:
    return Plan.objects.create(name="pro", requests_per_minute=6000, tokens_per_day=5_000_000)


def plan_form(**overrides) -> dict:
    data = {"name": "team", "description": "", "all_models": "on", "models": []}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


# --- who gets in ----------------------------------------------------------------------------


def test_staff_reach_the_admin(staff_client):
    response = staff_client.get("/admin/")

    assert response.status_code == 200
    body = response.content.decode()
    assert 'href="/admin/accounts/user/"' in body
    assert 'href="/admin/accounts/plan/"' in body


def test_customers_are_sent_to_the_admin_login(client, alice):
    client.force_login(alice)

    for path in ("/admin/", USERS, PLANS):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/?next="), path


def test_anonymous_visitors_are_sent_to_the_admin_login(client, plan):
    response = client.get(USERS)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={USERS}"


def test_staff_log_in_to_the_admin_through_the_portal_login(client, staff):
    # The admin's own login page hands over to allauth's (rate limits, MFA stage).
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")

    response = client.post(
        "/accounts/login/?next=/admin/",
        {"login": "staff@example.com", "password": "correct horse battery"},
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/authenticate/")
    assert client.get("/admin/").status_code == 302  # the password alone is not enough

    code = format_hotp_value(hotp_value(staff.totp_secret, int(time.time()) // 30))
    assert client.post("/accounts/2fa/authenticate/", {"code": code}).status_code == 302
    assert client.get("/admin/").status_code == 200


# --- users --------------------------------------------------------------------------------


def test_user_list_shows_email_and_flags(staff_client, alice, bob):
    body = staff_client.get(USERS).content.decode()

    for text in ("alice@example.com", "bob@example.com", "Date joined"):
        assert text in body


def test_user_list_costs_the_same_queries_for_3_or_30_users(
    staff_client, make_user, pro, django_assert_max_num_queries
):
    for n in range(2):
        make_user(f"few{n}@example.com", plan_=pro)
    with django_assert_max_num_queries(100) as few:
        staff_client.get(USERS)
    for n in range(27):
        make_user(f"many{n}@example.com", plan_=pro if n % 2 else None)

    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        response = staff_client.get(USERS)

    assert response.status_code == 200
    assert "many26@example.com" in response.content.decode()
    assert len(many.captured_queries) == len(few.captured_queries)


def test_users_are_found_by_email(staff_client, alice, bob):
    body = staff_client.get(USERS, {"q": "bob@"}).content.decode()

    assert "bob@example.com" in body
    assert "alice@example.com" not in body


def test_users_filter_by_staff(staff_client, alice, bob):
    by_staff = staff_client.get(USERS, {"is_staff__exact": "1"}).content.decode()

    assert "staff@example.com" in by_staff
    assert "alice@example.com" not in by_staff


def test_staff_create_a_user_by_email_with_a_personal_organization(staff_client, plan):
    response = staff_client.post(
        f"{USERS}add/",
        {
            "email": "Erin@Example.com",
            "usable_password": "true",
            "password1": "a long and unusual passphrase 42",
            "password2": "a long and unusual passphrase 42",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    erin = User.objects.get(email="erin@example.com")
    assert personal_org(erin).plan == plan  # the default plan, on her organization
    assert erin.check_password("a long and unusual passphrase 42")


def test_staff_cannot_create_a_case_twin_of_an_existing_email(staff_client, alice):
    response = staff_client.post(
        f"{USERS}add/",
        {
            "email": "ALICE@example.com",
            "usable_password": "false",
        },
    )

    assert response.status_code == 200
    assert "A user with this email address already exists." in response.content.decode()
    assert User.objects.filter(email__iexact="alice@example.com").count() == 1


# --- organizations ------------------------------------------------------------------------


def test_staff_move_an_organization_to_another_plan_on_the_change_form(
    staff_client, alice, alice_key, pro, django_capture_on_commit_callbacks
):
    _, raw = alice_key
    org = personal_org(alice)
    apikey_authenticate(raw_key=raw)  # cached
    page = staff_client.get(f"{ORGS}{org.pk}/change/")
    assert page.status_code == 200
    assert "alice@example.com" in page.content.decode()  # members inline
    data = {
        "name": org.name,
        "slug": org.slug,
        "plan": pro.pk,
        "personal": "on",
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "1",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-id": org.memberships.get().pk,
        "memberships-0-org": org.pk,
        "memberships-0-user": alice.pk,
        "memberships-0-role": "owner",
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"{ORGS}{org.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:3000]
    org.refresh_from_db()
    assert org.plan == pro
    assert apikey_authenticate(raw_key=raw).plan_id == pro.pk


def test_the_move_to_plan_action_updates_organizations_and_their_cached_keys(
    staff_client, alice, bob, pro, alice_key, django_capture_on_commit_callbacks
):
    _, raw = alice_key
    org = personal_org(alice)
    assert apikey_authenticate(raw_key=raw).plan_id == org.plan_id  # now cached

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            ORGS,
            {"action": f"set_plan_{pro.pk}", "_selected_action": [org.pk], "confirmed": "yes"},
        )

    assert response.status_code == 302
    assert personal_org(alice).plan == pro
    assert personal_org(bob).plan != pro
    # The key's cached entry carries the plan: the very next API call sees the new one.
    assert apikey_authenticate(raw_key=raw).plan_id == pro.pk


def test_suspending_an_organization_refuses_its_keys_at_once(
    staff_client, alice, alice_key, django_capture_on_commit_callbacks
):
    from core.errors import InvalidApiKey

    _, raw = alice_key
    org = personal_org(alice)
    apikey_authenticate(raw_key=raw)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            ORGS, {"action": "suspend_selected", "_selected_action": [org.pk], "confirmed": "yes"}
        )
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            ORGS,
            {"action": "reinstate_selected", "_selected_action": [org.pk], "confirmed": "yes"},
        )
    assert apikey_authenticate(raw_key=raw)


def test_organization_list_costs_the_same_queries_for_3_or_30(
    staff_client, make_user, pro, django_assert_max_num_queries
):
    for n in range(2):
        make_user(f"few{n}@example.com", plan_=pro)
    with django_assert_max_num_queries(100) as few:
        staff_client.get(ORGS)
    for n in range(27):
        make_user(f"many{n}@example.com", plan_=pro if n % 2 else None)

    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        response = staff_client.get(ORGS)

    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


# --- plans --------------------------------------------------------------------------------


def test_plan_list_shows_limits_and_organization_counts(staff_client, alice, bob, make_user, pro):
    make_user("carol@example.com", plan_=pro)

    response = staff_client.get(PLANS)

    body = response.content.decode()
    assert response.status_code == 200
    rows = {plan.name: plan for plan in response.context["cl"].result_list}
    assert rows["free"].org_count == 3  # alice's, bob's and staff's (the fixture's plan)
    assert rows["pro"].org_count == 1
    assert f'href="/admin/accounts/organization/?plan__id__exact={pro.pk}">1</a>' in body
    assert "unlimited" in body  # empty limits say so
    assert "6000" in body


def test_plan_list_costs_the_same_queries_for_2_or_12_plans(
    staff_client, make_user, django_assert_max_num_queries
):
    extra = Plan.objects.create(name="p-extra")
    make_user("x@example.com", plan_=extra)
    with django_assert_max_num_queries(100) as few:
        staff_client.get(PLANS)
    for n in range(10):
        more = Plan.objects.create(name=f"p{n:02}")
        make_user(f"u{n}@example.com", plan_=more)

    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        staff_client.get(PLANS)

    assert len(many.captured_queries) == len(few.captured_queries)


def test_plan_form_says_empty_means_unlimited(staff_client, plan):
    body = staff_client.get(f"{PLANS}{plan.pk}/change/").content.decode()

    for field in Plan.LIMIT_FIELDS:
        assert f'name="{field}"' in body
    assert body.count("Empty = unlimited.") >= len(Plan.LIMIT_FIELDS)


def test_staff_create_a_plan_with_limits_and_a_model_list(staff_client, plan):
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="admin-pool")
    llama = CatalogModel.objects.create(public_id="cortensor/llama-3.1-8b", pool=pool)
    CatalogModel.objects.create(public_id="cortensor/qwen-2.5-7b", pool=pool)

    response = staff_client.post(
        f"{PLANS}add/",
        plan_form(
            requests_per_minute="60", tokens_per_month="1000000", all_models=None, models=[llama.pk]
        ),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    team = Plan.objects.get(name="team")
    assert team.requests_per_minute == 60
    assert team.tokens_per_month == 1_000_000
    assert team.tokens_per_minute is None  # left empty: unlimited
    assert not team.all_models
    assert list(team.models.values_list("public_id", flat=True)) == ["cortensor/llama-3.1-8b"]


def test_only_one_plan_can_be_the_default(staff_client, plan):
    response = staff_client.post(f"{PLANS}add/", plan_form(is_default="on"))

    assert response.status_code == 200
    assert "is the default plan already" in response.content.decode()
    assert not Plan.objects.filter(name="team").exists()


def test_an_organization_links_to_its_keys_and_ledgers(staff_client, alice, bob, make_key):
    from metering.services import usage_aggregate
    from tests.builders import usage_record

    alices, _ = make_key(alice, "alice-only-key")
    bobs, _ = make_key(bob, "bob-only-key")
    usage_record(alice, alices)
    usage_record(bob, bobs)
    usage_aggregate()
    org = personal_org(alice)
    page = staff_client.get(f"{ORGS}{org.pk}/change/").content.decode()
    keys_url = f"/admin/apikeys/apikey/?org__id__exact={org.pk}"
    ledgers_url = f"/admin/metering/dailyusage/?org__id__exact={org.pk}"
    assert keys_url.replace("&", "&amp;") in page and ledgers_url in page
    keys = staff_client.get(keys_url).content.decode()
    assert "alice-only-key" in keys and "bob-only-key" not in keys
    ledgers = staff_client.get(ledgers_url)
    assert ledgers.status_code == 200
    assert [row.key_id for row in ledgers.context["cl"].result_list] == [alices.pk]
