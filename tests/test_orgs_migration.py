"""The organizations migration, on a database holding the previous schema's data: users, their
plans, keys, usage records, ledgers and (on Redis) the plan's day and month counters all carry
over to each user's personal organization, and a key that worked before works after, still
counting against the same quota."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apikeys import keyformat
from core.errors import QuotaExceeded
from core.redis import get_redis
from metering.limits import keys as limit_keys
from metering.limits.base import Periods
from metering.partitions import usage_partitions
from tests.test_usage_partitions_migration import back_to_latest

BEFORE = [
    ("accounts", "0001_initial"),
    ("apikeys", "0002_apikey_playground_flag"),
    ("metering", "0005_usage_endpoint_messages"),
]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.fixture
def old_schema():
    months = usage_partitions()
    apps = _migrate(BEFORE)
    yield apps
    back_to_latest(months)


def _old_data(apps):
    """Two customers as the previous release stored them."""
    Plan = apps.get_model("accounts", "Plan")
    User = apps.get_model("accounts", "User")
    ApiKey = apps.get_model("apikeys", "ApiKey")
    UsageRecord = apps.get_model("metering", "UsageRecord")
    DailyUsage = apps.get_model("metering", "DailyUsage")
    small = Plan.objects.create(name="small", requests_per_day=5, is_default=True)
    alice = User.objects.create(email="alice@example.com", plan=small, password="!")
    bob = User.objects.create(email="bob@example.com", plan=None, password="!")
    made = {}
    for user in (alice, bob):
        public_id = keyformat.new_public_id()
        raw = keyformat.new_key(public_id)
        key = ApiKey.objects.create(
            owner=user,
            name=f"{user.email} key",
            public_id=public_id,
            secret_hash=keyformat.hash_key(raw),
            hash_version=keyformat.current_hash_version(),
        )
        made[user.email] = (user, key, raw)
    now = timezone.now()
    alice_key = made["alice@example.com"][1]
    for n in range(3):
        UsageRecord.objects.create(
            request_id=uuid.uuid4().hex,
            user=alice,
            key=alice_key,
            endpoint="chat.completions",
            outcome="ok",
            http_status=200,
            prompt_tokens=10,
            completion_tokens=5,
            total_tokens=15,
            admitted=True,
            created_at=now - timedelta(seconds=n),
        )
    # A record of a key deleted long ago: it still belongs to alice's organization.
    UsageRecord.objects.create(
        request_id=uuid.uuid4().hex,
        user=alice,
        key_id=999_999,
        endpoint="chat.completions",
        outcome="ok",
        http_status=200,
        created_at=now,
    )
    DailyUsage.objects.create(
        day=(now - timedelta(days=1)).date(),
        user=alice,
        key=alice_key,
        model="m",
        requests=7,
        total_tokens=70,
    )
    return made


@pytest.mark.django_db(transaction=True)
def test_users_keys_records_ledgers_and_counters_carry_over(old_schema):
    made = _old_data(old_schema)
    alice, alice_key, alice_raw = made["alice@example.com"]
    bob, bob_key, _ = made["bob@example.com"]
    client = get_redis()
    periods = Periods.at(int(timezone.now().timestamp() * 1000))
    if client is not None:
        # The previous release's plan counter: alice used 3 of her 5 requests today.
        old = limit_keys.period(limit_keys.legacy_user_base(alice.pk), "rpd", periods.day, "")
        client.set(old, 3, ex=86_400)

    _migrate(_latest())

    from accounts.models import Membership, Organization
    from apikeys.models import ApiKey
    from apikeys.services import apikey_authenticate
    from catalog.routing import routing_table
    from metering.limits import limits_admit, limits_status
    from metering.models import DailyUsage, UsageRecord

    alice_org = Organization.objects.get(memberships__user_id=alice.pk)
    bob_org = Organization.objects.get(memberships__user_id=bob.pk)
    assert alice_org.personal and bob_org.personal and alice_org != bob_org
    assert alice_org.plan.name == "small"  # her plan moved to her organization
    assert bob_org.plan is None  # no plan: the default one applies, as before
    assert Membership.objects.get(org=alice_org).role == "owner"
    assert ApiKey.objects.get(pk=alice_key.pk).org == alice_org
    assert ApiKey.objects.get(pk=bob_key.pk).org == bob_org
    assert set(UsageRecord.objects.values_list("org_id", flat=True)) == {alice_org.pk}
    assert DailyUsage.objects.get().org_id == alice_org.pk

    principal = apikey_authenticate(raw_key=alice_raw)  # the old key still works
    assert (principal.org_id, principal.owner_id) == (alice_org.pk, alice.pk)
    assert principal.plan_id == alice_org.plan_id

    if client is None:
        return
    plan = routing_table().plan_for(principal.plan_id)
    status = limits_status(principal=principal, plan=plan)
    assert status["requests_per_day"]["used"] == 3  # the counter carried over
    old = limit_keys.period(limit_keys.legacy_user_base(alice.pk), "rpd", periods.day, "")
    assert client.get(old) is None
    for n in range(2):
        limits_admit(principal=principal, plan=plan, reserve_tokens=0, request_id=f"m{n}")
    with pytest.raises(QuotaExceeded):
        limits_admit(principal=principal, plan=plan, reserve_tokens=0, request_id="m3")


@pytest.mark.django_db(transaction=True)
def test_the_migration_leaves_the_schema_the_models_describe(old_schema):
    _migrate(_latest())
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
    assert settings.AUTH_USER_MODEL == "accounts.User"


@pytest.mark.django_db
def test_a_record_spooled_before_organizations_is_drained_into_its_keys_organization(
    alice_key, settings, tmp_path
):
    """A spool line (or journal entry) written by the previous release has no org_id: it
    lands in the organization of its key, not in none."""
    import json

    from accounts.selectors import personal_org
    from metering import recording
    from metering.models import UsageRecord

    key, _ = alice_key
    settings.USAGE_SPOOL_DIR = tmp_path
    old_line = recording.Usage(
        request_id="req_from_before",
        user_id=key.owner_id,
        key_id=key.pk,
        endpoint="chat.completions",
        prompt_tokens=1,
        completion_tokens=1,
    ).row()
    del old_line["org_id"]  # the previous release's line had no such field
    recording._spool_file_append(json.dumps(old_line, default=str))
    assert recording._drain_files() == 1
    record = UsageRecord.objects.get(request_id="req_from_before")
    assert record.org_id == personal_org(key.owner).pk
