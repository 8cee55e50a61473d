"""Two deployments on one Redis database (each with its own CACHE_KEY_PREFIX) never see each
other's limit counters, admission journal or usage spool."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from core.errors import RateLimited
from metering.limits import keys, limits_admit
from metering.models import UsageRecord
from metering.recording import (
    Usage,
    _spool_line,
    journal_entry,
    usage_journal_reconcile,
    usage_spool_drain,
)
from tests.test_limits_support import make_plan

pytestmark = [
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="two deployments share one Redis"),
    pytest.mark.django_db(transaction=True),
]

# The two deployments' prefixes carry this run's id: another run on the same Redis database
# must not see (or clean up) them.
DEPLOY_A = f"deploy-a-{os.environ['PORTAL_TEST_RUN_ID']}"
DEPLOY_B = f"deploy-b-{os.environ['PORTAL_TEST_RUN_ID']}"
LUA_DIR = Path(__file__).resolve().parent.parent / "metering" / "limits"


class Deployment:
    def __init__(self, settings, prefix: str):
        self.settings, self.prefix = settings, prefix

    def __enter__(self):
        caches = {**self.settings.CACHES}
        caches["default"] = {**caches["default"], "KEY_PREFIX": self.prefix}
        self.settings.CACHES = caches
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def principal(alice_key):
    from apikeys.services import apikey_authenticate

    _, raw = alice_key
    return apikey_authenticate(raw_key=raw)


def _clean(prefix_names):
    from core.redis import get_redis

    client = get_redis()
    for name in prefix_names:
        for key in client.scan_iter(match=f"*{name}*"):
            client.delete(key)


def test_journal_spool_and_counters_are_per_prefix(settings, principal):
    _clean([DEPLOY_A, DEPLOY_B])
    settings.LIMITS_KEY_PREFIX = None
    plan = make_plan(max_concurrent_requests=1)
    usage = Usage(
        request_id="req_prefixed",
        user_id=principal.owner_id,
        key_id=principal.key_id,
        endpoint="chat.completions",
    )
    with Deployment(settings, DEPLOY_A):
        assert keys.journal(keys.org_base(principal.org_id)).startswith(f"{DEPLOY_A}:")
        assert keys.journal_index().startswith(f"{{{DEPLOY_A}:")
        limits_admit(
            principal=principal,
            plan=plan,
            reserve_tokens=10,
            request_id=usage.request_id,
            journal=journal_entry(usage, prompt_tokens=3),
            lease_seconds=1,
        )
        with pytest.raises(RateLimited):  # A's one slot is taken
            limits_admit(principal=principal, plan=plan, reserve_tokens=10, request_id="r2")
        spooled = Usage(
            request_id="req_spooled_a",
            user_id=principal.owner_id,
            key_id=principal.key_id,
            endpoint="completions",
        )
        _spool_line(json.dumps(spooled.row(), default=str))

    with Deployment(settings, DEPLOY_B):
        # B's counters are its own: the same user has a free slot there.
        limits_admit(principal=principal, plan=plan, reserve_tokens=10, request_id="r3")
        assert usage_spool_drain() == 0

    deadline = time.monotonic() + 10
    recovered = 0
    while not recovered:
        assert time.monotonic() < deadline, "deployment A's journal entry never fell due"
        with Deployment(settings, DEPLOY_B):
            assert usage_journal_reconcile() == 0  # never A's entry
        with Deployment(settings, DEPLOY_A):
            recovered = usage_journal_reconcile()
        time.sleep(0.1)
    assert recovered == 1
    with Deployment(settings, DEPLOY_A):
        assert usage_spool_drain() == 1
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {
        "req_prefixed",
        "req_spooled_a",
    }
    _clean([DEPLOY_A, DEPLOY_B])


def test_every_key_a_script_touches_comes_through_keys():
    """Valid on Redis Cluster: scripts name no key themselves (no quoted key names, no keys
    built by concatenation); redis.call's key argument is always from KEYS."""
    import re

    from metering.recording import CLAIM_LUA, UNCLAIM_LUA
    from metering.services import ADD_TO_WINDOW, SET_AT_LEAST

    scripts = {p.name: p.read_text() for p in LUA_DIR.glob("*.lua")}
    scripts.update(
        claim=CLAIM_LUA, unclaim=UNCLAIM_LUA, add_to_window=ADD_TO_WINDOW, set=SET_AT_LEAST
    )
    for name, text in scripts.items():
        code = "\n".join(line.split("--")[0] for line in text.splitlines())
        assert not re.search(r"redis\.call\('[A-Z]+', *'", code), name  # a literal key
        assert not re.search(r"\.\. *':", code.replace("member .. ':over'", "")), name


def test_cache_clear_deletes_the_caches_entries_and_nothing_else():
    """Django's RedisCache.clear() is FLUSHDB: on the Redis that the limits, the admission
    journal, the spool and Celery share it would lose usage records. Ours keeps to its own."""
    from django.core.cache import cache

    from core.redis import get_redis

    client = get_redis()
    journal = keys.journal(keys.org_base(1))
    client.hset(journal, "clear-test", "{}")
    cache.set("clear-test-entry", 1)
    neighbour = f"{os.environ['PORTAL_TEST_RUN_ID']}-another-deployment:1:entry"
    client.set(neighbour, 1)
    try:
        cache.clear()
        assert cache.get("clear-test-entry") is None
        assert client.hexists(journal, "clear-test")
        assert client.exists(neighbour)
    finally:
        client.hdel(journal, "clear-test")
        client.delete(neighbour)
