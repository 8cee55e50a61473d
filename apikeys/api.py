"""The key management API for the logged-in user (session + CSRF): list, create, revoke.

Each view validates, calls the service, serialises, returns; errors leave through
core.errors' handler in the OpenAI shape. Keys are always looked up through
`apikey_get_for_owner`, so another user's id is a 404.
"""

from __future__ import annotations

from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apikeys.authentication import client_ip
from apikeys.selectors import apikey_list_for_owner
from apikeys.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyOutputSerializer,
)
from apikeys.services import apikey_create, apikey_get_for_owner, apikey_revoke


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


_KeyList = inline_serializer(
    "ApiKeyList",
    {"object": serializers.CharField(), "data": ApiKeyOutputSerializer(many=True)},
)


class ApiKeyListCreateApi(APIView):
    @extend_schema(operation_id="keys_list", responses=_KeyList)
    def get(self, request):
        keys = apikey_list_for_owner(owner=request.user)
        data = ApiKeyOutputSerializer(keys, many=True).data
        return _no_store(Response({"object": "list", "data": data}))

    @extend_schema(
        operation_id="keys_create",
        request=ApiKeyCreateInputSerializer,
        responses={201: ApiKeyCreatedSerializer},
    )
    @method_decorator(ratelimit(key="user", rate="20/m", method="POST", block=True))
    def post(self, request):
        payload = ApiKeyCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        key, secret = apikey_create(
            owner=request.user,
            name=data["name"],
            expires_at=data.get("expires_at"),
            allowed_models=data.get("models") or (),
            requests_per_minute=data.get("requests_per_minute"),
            tokens_per_minute=data.get("tokens_per_minute"),
            actor=request.user,
            ip=client_ip(request),
        )
        body = ApiKeyCreatedSerializer(key, context={"secret": secret}).data
        return _no_store(Response(body, status=status.HTTP_201_CREATED))


class ApiKeyDetailApi(APIView):
    @extend_schema(operation_id="keys_retrieve", responses=ApiKeyOutputSerializer)
    def get(self, request, key_id: int):
        key = apikey_get_for_owner(owner=request.user, key_id=key_id)
        return _no_store(Response(ApiKeyOutputSerializer(key).data))

    @extend_schema(operation_id="keys_delete", responses=ApiKeyOutputSerializer)
    def delete(self, request, key_id: int):
        return _revoke(request, key_id)


class ApiKeyRevokeApi(APIView):
    @extend_schema(operation_id="keys_revoke", request=None, responses=ApiKeyOutputSerializer)
    def post(self, request, key_id: int):
        return _revoke(request, key_id)


def _revoke(request, key_id: int) -> Response:
    key = apikey_get_for_owner(owner=request.user, key_id=key_id)
    key = apikey_revoke(key=key, actor=request.user, ip=client_ip(request))
    return _no_store(Response(ApiKeyOutputSerializer(key).data))
