"""Query budgets: authentication reads nothing from the database once warm; lists are flat."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apikeys.services import apikey_authenticate


@pytest.fixture
def models_(db):
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="keys-queries")
    return [CatalogModel.objects.create(public_id=f"cortensor/m{i}", pool=pool) for i in range(3)]


def test_warm_authentication_makes_zero_queries(alice_key, django_assert_num_queries):
    _, raw = alice_key
    apikey_authenticate(raw_key=raw, ip="198.51.100.4")  # loads the entry, writes last_used

    with django_assert_num_queries(0):
        for _ in range(5):
            apikey_authenticate(raw_key=raw, ip="198.51.100.4")


def test_a_cold_cache_costs_one_load_then_nothing(alice_key):
    _, raw = alice_key
    with CaptureQueriesContext(connection) as cold:
        apikey_authenticate(raw_key=raw)
    with CaptureQueriesContext(connection) as warm:
        apikey_authenticate(raw_key=raw)

    assert 1 <= len(cold) <= 4  # key + owner, its models, the last_used write
    assert len(warm) == 0


def test_unknown_keys_are_negatively_cached(db, django_assert_num_queries):
    from apikeys import keyformat
    from core.errors import InvalidApiKey

    raw = keyformat.new_key(keyformat.new_public_id())
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)

    with django_assert_num_queries(0), pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=raw)


def _count(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_list_page_and_api_cost_the_same_for_one_key_or_many(client, alice, make_key, models_):
    client.force_login(alice)
    make_key(alice, "first", allowed_models=models_)
    one = (_count(client, "/keys"), _count(client, "/api/keys"))

    for i in range(6):
        make_key(alice, f"more {i}", allowed_models=models_[:2])
    many = (_count(client, "/keys"), _count(client, "/api/keys"))

    assert many == one
