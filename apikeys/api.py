"""The key management API for the logged-in user (session + CSRF): list, create, change,
rotate, revoke.

`/api/keys` acts for the user's current organization, `/api/orgs/<slug>/keys` for the one
named (where the user must be a member: anything else is a 404). Each view validates, calls
the service, serialises, returns; errors leave through core.errors' handler in the OpenAI
shape. Keys are always looked up through `apikey_get_for_member`, so another member's key (for
a plain member) or another organization's is a 404.
"""

from __future__ import annotations

from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import acting_membership, membership_for
from apikeys.authentication import client_ip
from apikeys.selectors import apikey_list_for_member
from apikeys.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyOutputSerializer,
    ApiKeyRotateInputSerializer,
    ApiKeyUpdateInputSerializer,
)
from apikeys.services import (
    BUDGET_FIELDS,
    CAP_FIELDS,
    apikey_create,
    apikey_get_for_member,
    apikey_revoke,
    apikey_rotate,
    apikey_update,
)


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


_KeyList = inline_serializer(
    "ApiKeyList",
    {"object": serializers.CharField(), "data": ApiKeyOutputSerializer(many=True)},
)


def _membership(request, slug: str | None = None):
    if slug is None:
        return acting_membership(request)
    return membership_for(user=request.user, slug=slug)


class ApiKeyListCreateApi(APIView):
    @extend_schema(operation_id="keys_list", responses=_KeyList)
    def get(self, request, slug: str | None = None):
        keys = apikey_list_for_member(membership=_membership(request, slug))
        data = ApiKeyOutputSerializer(keys, many=True).data
        return _no_store(Response({"object": "list", "data": data}))

    @extend_schema(
        operation_id="keys_create",
        request=ApiKeyCreateInputSerializer,
        responses={201: ApiKeyCreatedSerializer},
    )
    @method_decorator(ratelimit(key="user", rate="20/m", method="POST", block=True))
    def post(self, request, slug: str | None = None):
        membership = _membership(request, slug)
        payload = ApiKeyCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        key, secret = apikey_create(
            owner=request.user,
            org=membership.org,
            name=data["name"],
            expires_at=data.get("expires_at"),
            allowed_models=data.get("models") or (),
            actor=request.user,
            ip=client_ip(request),
            **{field: data.get(field) for field in (*CAP_FIELDS, *BUDGET_FIELDS)},
        )
        body = ApiKeyCreatedSerializer(key, context={"secret": secret}).data
        return _no_store(Response(body, status=status.HTTP_201_CREATED))


class ApiKeyDetailApi(APIView):
    @extend_schema(operation_id="keys_retrieve", responses=ApiKeyOutputSerializer)
    def get(self, request, key_id: int, slug: str | None = None):
        key = apikey_get_for_member(membership=_membership(request, slug), key_id=key_id)
        return _no_store(Response(ApiKeyOutputSerializer(key).data))

    @extend_schema(
        operation_id="keys_update",
        request=ApiKeyUpdateInputSerializer,
        responses=ApiKeyOutputSerializer,
    )
    @method_decorator(ratelimit(key="user", rate="60/m", method="PATCH", block=True))
    def patch(self, request, key_id: int, slug: str | None = None):
        key = apikey_get_for_member(membership=_membership(request, slug), key_id=key_id)
        payload = ApiKeyUpdateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        if "models" in changes:
            changes["allowed_models"] = changes.pop("models")
        key = apikey_update(key=key, actor=request.user, ip=client_ip(request), **changes)
        return _no_store(Response(ApiKeyOutputSerializer(key).data))

    @extend_schema(operation_id="keys_delete", responses=ApiKeyOutputSerializer)
    def delete(self, request, key_id: int, slug: str | None = None):
        return _revoke(request, key_id, slug)


class ApiKeyRotateApi(APIView):
    @extend_schema(
        operation_id="keys_rotate",
        request=ApiKeyRotateInputSerializer,
        responses={200: ApiKeyCreatedSerializer},
    )
    @method_decorator(ratelimit(key="user", rate="20/m", method="POST", block=True))
    def post(self, request, key_id: int, slug: str | None = None):
        key = apikey_get_for_member(membership=_membership(request, slug), key_id=key_id)
        payload = ApiKeyRotateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        key, secret = apikey_rotate(
            key=key,
            grace_seconds=payload.validated_data["grace_seconds"],
            actor=request.user,
            ip=client_ip(request),
        )
        body = ApiKeyCreatedSerializer(key, context={"secret": secret}).data
        return _no_store(Response(body))


class ApiKeyRevokeApi(APIView):
    @extend_schema(operation_id="keys_revoke", request=None, responses=ApiKeyOutputSerializer)
    def post(self, request, key_id: int, slug: str | None = None):
        return _revoke(request, key_id, slug)


def _revoke(request, key_id: int, slug: str | None) -> Response:
    key = apikey_get_for_member(membership=_membership(request, slug), key_id=key_id)
    key = apikey_revoke(key=key, actor=request.user, ip=client_ip(request))
    return _no_store(Response(ApiKeyOutputSerializer(key).data))


@extend_schema_view(
    get=extend_schema(operation_id="org_keys_list"),
    post=extend_schema(operation_id="org_keys_create"),
)
class OrgApiKeyListCreateApi(ApiKeyListCreateApi):
    pass


@extend_schema_view(
    get=extend_schema(operation_id="org_keys_retrieve"),
    patch=extend_schema(operation_id="org_keys_update"),
    delete=extend_schema(operation_id="org_keys_delete"),
)
class OrgApiKeyDetailApi(ApiKeyDetailApi):
    pass


@extend_schema_view(post=extend_schema(operation_id="org_keys_rotate"))
class OrgApiKeyRotateApi(ApiKeyRotateApi):
    pass


@extend_schema_view(post=extend_schema(operation_id="org_keys_revoke"))
class OrgApiKeyRevokeApi(ApiKeyRevokeApi):
    pass
