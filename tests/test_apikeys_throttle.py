"""Too many bad keys from one address: 429 with Retry-After, other addresses unaffected."""

from __future__ import annotations

import time

import pytest
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apikeys import keyformat
from apikeys.authentication import ApiKeyAuthentication
from apikeys.services import AUTH_FAILURES_PER_MINUTE, apikey_authenticate
from core.errors import InvalidApiKey, RateLimited


class WhoAmI(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"owner_id": request.user.owner_id})


@pytest.fixture(autouse=True)
def _same_minute():
    """The counter is per clock minute: start far enough from the boundary to stay in one."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


def _garbage() -> str:
    return keyformat.new_key(keyformat.new_public_id())


def test_service_throttles_an_address_after_the_threshold(db):
    for _ in range(AUTH_FAILURES_PER_MINUTE):
        with pytest.raises(InvalidApiKey):
            apikey_authenticate(raw_key=_garbage(), ip="203.0.113.9")

    with pytest.raises(RateLimited) as caught:
        apikey_authenticate(raw_key=_garbage(), ip="203.0.113.9")
    assert caught.value.status == 429
    assert 0 < int(caught.value.headers["Retry-After"]) <= 60

    # Another address is still told only that its key is invalid.
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=_garbage(), ip="203.0.113.10")


def test_drf_endpoint_answers_429_in_the_openai_shape(db):
    factory = APIRequestFactory()

    def call():
        request = factory.get(
            "/whoami", HTTP_AUTHORIZATION=f"Bearer {_garbage()}", REMOTE_ADDR="203.0.113.11"
        )
        return WhoAmI.as_view()(request)

    statuses = [call().status_code for _ in range(AUTH_FAILURES_PER_MINUTE)]
    assert statuses == [401] * AUTH_FAILURES_PER_MINUTE

    response = call()
    assert response.status_code == 429
    assert response.data["error"]["code"] == "rate_limit_exceeded"
    assert response.data["error"]["type"] == "rate_limit_error"
    assert int(response["Retry-After"]) > 0


def _throttle(ip: str) -> None:
    for _ in range(AUTH_FAILURES_PER_MINUTE):
        with pytest.raises(InvalidApiKey):
            apikey_authenticate(raw_key=_garbage(), ip=ip)


def test_a_throttled_client_costs_no_database_query(db, django_assert_num_queries):
    _throttle("203.0.113.12")

    with django_assert_num_queries(0):
        for _ in range(20):
            with pytest.raises(RateLimited):
                apikey_authenticate(raw_key=_garbage(), ip="203.0.113.12")


def test_a_known_but_revoked_key_keeps_answering_401(alice, make_key):
    from apikeys.services import apikey_revoke

    key, raw = make_key(alice)
    apikey_revoke(key=key, actor=alice)

    for _ in range(AUTH_FAILURES_PER_MINUTE * 2):
        with pytest.raises(InvalidApiKey):
            apikey_authenticate(raw_key=raw, ip="203.0.113.13")
    # It was not counted as guessing: the address is not throttled.
    with pytest.raises(InvalidApiKey):
        apikey_authenticate(raw_key=_garbage(), ip="203.0.113.13")


def test_a_wrong_secret_for_a_known_key_is_guessing(alice, make_key):
    key, _ = make_key(alice)
    wrong = keyformat.new_key(key.public_id)
    for _ in range(AUTH_FAILURES_PER_MINUTE):
        with pytest.raises(InvalidApiKey):
            apikey_authenticate(raw_key=wrong, ip="203.0.113.14")
    with pytest.raises(RateLimited):
        apikey_authenticate(raw_key=wrong, ip="203.0.113.14")


def test_ipv6_clients_are_counted_by_their_64(db):
    # Every failure from a different address of one /64.
    for host in range(1, AUTH_FAILURES_PER_MINUTE + 1):
        with pytest.raises(InvalidApiKey):
            apikey_authenticate(raw_key=_garbage(), ip=f"2001:db8:0:7::{host:x}")

    with pytest.raises(RateLimited):
        apikey_authenticate(raw_key=_garbage(), ip="2001:db8:0:7:ffff:ffff:ffff:ffff")
    with pytest.raises(InvalidApiKey):  # the next /64 is someone else
        apikey_authenticate(raw_key=_garbage(), ip="2001:db8:0:8::1")


@pytest.mark.parametrize(
    ("ip", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:0:7:1:2:3:4", "2001:db8:0:7::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("not an address", "not an address"),
    ],
)
def test_throttle_client(ip, counted_as):
    from apikeys.services import throttle_client

    assert throttle_client(ip) == counted_as
