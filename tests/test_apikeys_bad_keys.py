"""Every bad key gets the same 401 body: nothing tells a caller which part was wrong. Only the
holder of a real key (its whole secret matched) is told why it no longer works: revoked on a
date, or expired on one; still the same status, type and code."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import Resolver404, resolve
from django.utils import timezone
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apikeys import keyformat
from apikeys.authentication import ApiKeyAuthentication
from apikeys.models import ApiKey
from apikeys.services import apikey_authenticate, apikey_revoke
from core.errors import InvalidApiKey

EXPECTED = {
    "error": {
        "message": InvalidApiKey().message,
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


class WhoAmI(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"owner_id": request.user.owner_id})


def _unknown() -> str:
    return keyformat.new_key(keyformat.new_public_id())


def _wrong_secret(key: ApiKey) -> str:
    return keyformat.new_key(key.public_id)


def _revoked(key: ApiKey, raw: str, django_capture_on_commit_callbacks) -> str:
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor_label="test")
    return raw


def _expired(key: ApiKey, raw: str) -> str:
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return raw


@pytest.fixture
def bad_key(request, alice_key, django_capture_on_commit_callbacks):
    """The raw key for each bad case (None: no key at all)."""
    key, raw = alice_key
    return {
        "missing": lambda: None,
        "malformed": lambda: "sk-not-one-of-ours",
        "truncated": lambda: raw[:-1],
        "unknown": _unknown,
        "wrong_secret": lambda: _wrong_secret(key),
        "revoked": lambda: _revoked(key, raw, django_capture_on_commit_callbacks),
        "expired": lambda: _expired(key, raw),
    }[request.param]()


CASES = ["missing", "malformed", "truncated", "unknown", "wrong_secret"]
KNOWN_KEY_CASES = {"revoked": "This API key was revoked on ", "expired": "This API key expired on "}


@pytest.mark.parametrize("bad_key", CASES, indirect=True)
def test_service_raises_the_same_error(bad_key):
    with pytest.raises(InvalidApiKey) as caught:
        apikey_authenticate(raw_key=bad_key, ip="198.51.100.2")
    assert caught.value.status == 401
    assert caught.value.body() == EXPECTED


@pytest.mark.parametrize("bad_key", list(KNOWN_KEY_CASES), indirect=True)
def test_a_real_key_that_no_longer_works_says_why(bad_key, request):
    with pytest.raises(InvalidApiKey) as caught:
        apikey_authenticate(raw_key=bad_key, ip="198.51.100.2")
    error = caught.value.body()["error"]
    assert caught.value.status == 401
    assert (error["type"], error["code"], error["param"]) == (
        "authentication_error",
        "invalid_api_key",
        None,
    )
    assert error["message"].startswith(KNOWN_KEY_CASES[request.node.callspec.params["bad_key"]])


@pytest.mark.parametrize("bad_key", CASES, indirect=True)
def test_drf_endpoint_answers_the_same_401(bad_key):
    headers = {} if bad_key is None else {"HTTP_AUTHORIZATION": f"Bearer {bad_key}"}
    request = APIRequestFactory().get("/whoami", **headers)

    response = WhoAmI.as_view()(request)

    assert response.status_code == 401
    assert response.data == EXPECTED


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
def test_other_authorization_schemes_get_the_same_401(header, db):
    request = APIRequestFactory().get("/whoami", HTTP_AUTHORIZATION=header)

    response = WhoAmI.as_view()(request)

    assert response.status_code == 401
    assert response.data == EXPECTED


def _v1_models_routed() -> bool:
    try:
        resolve("/v1/models")
    except Resolver404:
        return False
    return True


@pytest.mark.parametrize("bad_key", CASES, indirect=True)
def test_v1_models_answers_the_same_401(client, bad_key):
    if not _v1_models_routed():
        pytest.skip("GET /v1/models is not routed yet (inference/urls.py)")
    headers = {} if bad_key is None else {"HTTP_AUTHORIZATION": f"Bearer {bad_key}"}

    response = client.get("/v1/models", **headers)

    assert response.status_code == 401
    assert response.json() == EXPECTED
