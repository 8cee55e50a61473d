"""The operator console for users and plans: who gets in, and lists that stay cheap."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.test import Client

from accounts.models import Plan, User
from apikeys.services import apikey_authenticate

pytestmark = pytest.mark.django_db

USERS = "/admin/accounts/user/"
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


def test_user_list_shows_email_plan_and_flags(staff_client, alice, bob, pro):
    bob.plan = pro
    bob.save()

    body = staff_client.get(USERS).content.decode()

    for text in ("alice@example.com", "bob@example.com", "free", "pro", "Date joined"):
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


def test_users_filter_by_plan_and_staff(staff_client, alice, bob, pro):
    bob.plan = pro
    bob.save()

    by_plan = staff_client.get(USERS, {"plan__id__exact": pro.pk}).content.decode()
    by_staff = staff_client.get(USERS, {"is_staff__exact": "1"}).content.decode()

    assert "bob@example.com" in by_plan
    assert "alice@example.com" not in by_plan
    assert "staff@example.com" in by_staff
    assert "alice@example.com" not in by_staff


def test_staff_create_a_user_by_email_with_a_plan(staff_client, pro):
    response = staff_client.post(
        f"{USERS}add/",
        {
            "email": "Erin@Example.com",
            "plan": pro.pk,
            "usable_password": "true",
            "password1": "a long and unusual passphrase 42",
            "password2": "a long and unusual passphrase 42",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    erin = User.objects.get(email="erin@example.com")
    assert erin.plan == pro
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


def test_staff_move_a_user_to_another_plan_on_the_change_form(staff_client, alice, pro):
    page = staff_client.get(f"{USERS}{alice.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if name not in {"password", "groups", "user_permissions", "last_login", "date_joined"}
        and value is not None
    }
    data.update({"plan": pro.pk, "is_active": "on"})

    response = staff_client.post(f"{USERS}{alice.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    alice.refresh_from_db()
    assert alice.plan == pro


def test_the_move_to_plan_action_updates_users_and_their_cached_keys(
    staff_client, alice, bob, pro, alice_key, django_capture_on_commit_callbacks
):
    _, raw = alice_key
    assert apikey_authenticate(raw_key=raw).plan_id == alice.plan_id  # now cached

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            USERS,
            {"action": f"set_plan_{pro.pk}", "_selected_action": [alice.pk], "confirmed": "yes"},
        )

    assert response.status_code == 302
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.plan == pro
    assert bob.plan != pro
    # The key's cached entry carries the plan: the very next API call sees the new one.
    assert apikey_authenticate(raw_key=raw).plan_id == pro.pk


# --- plans --------------------------------------------------------------------------------


def test_plan_list_shows_limits_and_user_counts(staff_client, alice, bob, make_user, pro):
    make_user("carol@example.com", plan_=pro)

    response = staff_client.get(PLANS)

    body = response.content.decode()
    assert response.status_code == 200
    rows = {plan.name: plan for plan in response.context["cl"].result_list}
    assert rows["free"].user_count == 3  # alice, bob, and staff (the fixture's plan)
    assert rows["pro"].user_count == 1
    assert f'href="/admin/accounts/user/?plan__id__exact={pro.pk}">1</a>' in body
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
