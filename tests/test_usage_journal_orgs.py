"""The admission journal is one per organization, under its hash tag (so admit.lua writes it
in the slot of the counters it moves, valid on Redis Cluster), and the reconciler still finds
every entry: through the journal index, through an hourly SCAN of every primary when the index
lost one, and in the one global journal of earlier releases. On a single Redis and, with
`make test-cluster`, on a 3-master cluster with the organizations on different nodes."""

from __future__ import annotations

import json

import pytest
from django.conf import settings

from core.redis import get_redis, is_cluster
from metering.limits import keys, limits_admit
from metering.models import UsageRecord
from metering.recording import Usage, journal_entry, usage_journal_reconcile
from tests import rediscluster

pytestmark = [
    pytest.mark.skipif(not settings.REDIS_URL, reason="the journal lives in Redis"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def principals(make_user, make_key):
    """Two customers whose organizations' journals live on different cluster nodes (any two
    on a single Redis)."""
    from apikeys.services import apikey_authenticate

    client = get_redis()
    found, nodes = [], set()
    for i in range(30):
        _, raw = make_key(make_user(f"customer{i}@example.com"))
        principal = apikey_authenticate(raw_key=raw)
        journal = keys.journal(keys.org_base(principal.org_id))
        node = client.get_node_from_key(journal).name if is_cluster(client) else i
        if node not in nodes:
            nodes.add(node)
            found.append(principal)
        if len(found) == 2:
            return found
    raise AssertionError("no two organizations on different nodes in 30 tries")


def _admit_journaled(principal, request_id: str):
    from catalog.routing import routing_table

    usage = Usage(
        request_id=request_id,
        user_id=principal.owner_id,
        key_id=principal.key_id,
        org_id=principal.org_id,
        endpoint="chat.completions",
        model="m",
    )
    return limits_admit(
        principal=principal,
        plan=routing_table().plan_for(principal.plan_id),
        reserve_tokens=10,
        request_id=request_id,
        journal=journal_entry(usage, prompt_tokens=4),
    )


def _make_all_due(client, principal) -> None:
    """Their process died long ago: every entry of the organization's journal is due."""
    due = keys.journal_due(keys.org_base(principal.org_id))
    client.zadd(due, dict.fromkeys(client.zrange(due, 0, -1), 0), xx=True)


def _recorded() -> set[str]:
    return set(UsageRecord.objects.values_list("request_id", flat=True))


def test_entries_of_organizations_on_different_nodes_are_all_written(principals):
    client = get_redis()
    first, second = principals
    _admit_journaled(first, "req_first")
    _admit_journaled(second, "req_second")
    for principal in principals:
        org_base = keys.org_base(principal.org_id)
        assert client.hlen(keys.journal(org_base)) == 1  # in the organization's own journal
        assert client.zscore(keys.journal_index(), org_base) is not None
    assert usage_journal_reconcile() == 0  # nothing due yet
    assert int(client.get(keys.journal_size())) == 2
    for principal in principals:
        _make_all_due(client, principal)
    assert usage_journal_reconcile() == 2
    assert _recorded() == {"req_first", "req_second"}
    assert all(r.error_code == "request_lost" for r in UsageRecord.objects.all())
    assert usage_journal_reconcile() == 0  # written once
    assert int(client.get(keys.journal_size())) == 0


def test_a_journal_the_index_lost_is_found_by_the_sweep(principals):
    """Redis lost the index (and a process still thinks its organization indexed): the next
    reconciler to take the hourly sweep SCANs every primary and indexes the journal again."""
    client = get_redis()
    first, _ = principals
    _admit_journaled(first, "req_unindexed")
    _make_all_due(client, first)
    client.delete(keys.journal_index())
    client.set(keys.journal_swept(), 1)  # a sweep ran lately: the index alone is walked
    assert usage_journal_reconcile() == 0
    client.delete(keys.journal_swept())
    assert usage_journal_reconcile() == 1
    assert _recorded() == {"req_unindexed"}


def test_an_empty_journal_leaves_the_index_only_when_nobody_indexed_it_lately(principals):
    client = get_redis()
    first, second = principals
    for principal, rid in ((first, "req_a"), (second, "req_b")):
        _admit_journaled(principal, rid).settle(total_tokens=4)  # settled: journal empty
    stale = keys.org_base(first.org_id)
    client.zadd(keys.journal_index(), {stale: 1})  # indexed long ago
    usage_journal_reconcile()
    indexed = {m.decode() for m in client.zrange(keys.journal_index(), 0, -1)}
    assert indexed == {keys.org_base(second.org_id)}


def test_the_global_journal_of_earlier_releases_is_still_written(principals):
    client = get_redis()
    first, _ = principals
    row = Usage(
        request_id="req_legacy",
        user_id=first.owner_id,
        key_id=first.key_id,
        org_id=first.org_id,
        endpoint="chat.completions",
        model="m",
    ).row()
    client.hset(keys.legacy_journal(), "req_legacy:abcd", json.dumps(row, default=str))
    client.zadd(keys.legacy_journal_due(), {"req_legacy:abcd": 0})
    assert usage_journal_reconcile() == 1
    assert _recorded() == {"req_legacy"}
    assert not client.exists(keys.legacy_journal(), keys.legacy_journal_due())


@pytest.mark.skipif(not rediscluster.enabled(), reason="a cluster run (`make test-cluster`)")
def test_a_cluster_run_uses_cluster_clients_everywhere():
    """The cluster variant cannot pass on plain clients by accident."""
    from django.core.cache import cache
    from redis.cluster import RedisCluster

    from core.cache import _ClusterClient

    assert isinstance(get_redis().connected(), RedisCluster)
    assert isinstance(cache._cache, _ClusterClient)
    assert isinstance(cache._cache.get_client().connected(), RedisCluster)
    assert len(get_redis().get_primaries()) == len(rediscluster.PORTS)
    assert settings.CELERY_BROKER_URL != settings.REDIS_URL
