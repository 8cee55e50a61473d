"""A good key authenticates, through the service and through the DRF class used on /v1/."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from accounts.selectors import personal_org
from apikeys import services
from apikeys.authentication import ApiKeyAuthentication
from apikeys.models import ApiKey
from apikeys.services import KeyPrincipal, apikey_authenticate


class WhoAmI(APIView):
    """The smallest endpoint behind the API-key authentication."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        principal = request.user
        return Response({"key_id": principal.key_id, "owner_id": principal.owner_id})


@pytest.fixture
def models_(db):
    from catalog.models import CatalogModel, RouterPool

    pool = RouterPool.objects.create(name="keys-auth")
    return [
        CatalogModel.objects.create(public_id=public_id, pool=pool)
        for public_id in ("cortensor/llama-3.1-8b", "cortensor/qwen-2.5-7b")
    ]


def test_service_returns_the_principal_behind_a_good_key(alice, alice_key):
    key, raw = alice_key

    principal = apikey_authenticate(raw_key=raw, ip="198.51.100.1")

    assert isinstance(principal, KeyPrincipal)
    assert principal.key_id == key.pk
    assert principal.public_id == key.public_id
    assert principal.owner_id == alice.pk
    assert principal.owner_email == "alice@example.com"
    assert principal.plan_id == personal_org(alice).plan_id
    assert principal.allowed_models is None
    assert principal.is_authenticated


def test_principal_carries_the_keys_model_subset_and_caps(alice, make_key, models_):
    _, raw = make_key(alice, "narrow", allowed_models=models_[:1], requests_per_minute=7)

    principal = apikey_authenticate(raw_key=raw)

    assert principal.allowed_models == frozenset({"cortensor/llama-3.1-8b"})
    assert principal.requests_per_minute == 7


def test_first_use_records_last_used(alice_key):
    key, raw = alice_key
    services._last_used_local.pop(key.pk, None)  # ids repeat between tests on SQLite
    assert key.last_used_at is None

    apikey_authenticate(raw_key=raw)

    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None


@pytest.mark.django_db(transaction=True)  # committed rows: two sessions must see the key
def test_a_due_last_use_stamp_never_holds_the_request_while_the_database_stalls(
    alice_key, settings
):
    """The stamp is written once a minute, by whichever request is due. With PostgreSQL down
    that write waited DB_POOL_TIMEOUT (30 s) for a connection and the request answered 500
    (tests/test_faults.py's outage, when it outlasted a minute). Here the database stalls
    for real, on a lock: another session holds the key's row, so any UPDATE of it waits."""
    if connection.vendor != "postgresql":
        pytest.skip("a row lock held by another session: PostgreSQL's")
    import psycopg

    settings.USAGE_WRITE_BATCHED = True  # production's shape (with Redis): writes off the request
    key, raw = alice_key
    params = connection.settings_dict
    authenticated = threading.Event()

    def request():
        try:
            apikey_authenticate(raw_key=raw)
            authenticated.set()
        finally:
            connections.close_all()

    with psycopg.connect(
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        dbname=params["NAME"],
    ) as other:
        other.execute("SELECT 1 FROM apikeys_apikey WHERE id = %s FOR UPDATE", [key.pk])
        threading.Thread(target=request, daemon=True).start()
        # A deadline only for the failure: the request waited on the row as long as it was held.
        assert authenticated.wait(timeout=60), "the request waited for the last-use write"
        assert ApiKey.objects.get(pk=key.pk).last_used_at is None  # still held: not written
    # The row is free again: the stamp written off the request lands.
    deadline = time.monotonic() + 60
    while ApiKey.objects.get(pk=key.pk).last_used_at is None:
        assert time.monotonic() < deadline, "the last-use stamp was never written"
        time.sleep(0.02)


def test_drf_class_authenticates_a_bearer_key(alice, alice_key):
    key, raw = alice_key
    request = APIRequestFactory().get("/whoami", HTTP_AUTHORIZATION=f"Bearer {raw}")

    response = WhoAmI.as_view()(request)

    assert response.status_code == 200
    assert response.data == {"key_id": key.pk, "owner_id": alice.pk}


def test_drf_class_accepts_the_scheme_in_any_case(alice, alice_key):
    _, raw = alice_key
    request = APIRequestFactory().get("/whoami", HTTP_AUTHORIZATION=f"bearer {raw}")

    assert WhoAmI.as_view()(request).status_code == 200
