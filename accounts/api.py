"""The organization management API (session + CSRF): members and invitations of one
organization, `/api/orgs/<slug>/...`. Someone who is not a member gets a 404 for everything
under the slug; a member without the role an action needs gets a 403 (permission_denied).
Errors leave through core.errors' handler in the API's shape."""

from __future__ import annotations

from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.emails import invitation_send
from accounts.models import Invitation, Membership, Role
from accounts.selectors import (
    membership_for,
    org_invitation_for,
    org_invitations_pending,
    org_member_for,
    org_members,
)
from accounts.services import (
    invitation_create,
    invitation_revoke,
    member_remove,
    member_set_role,
)
from core.errors import PermissionDeniedError


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


class MemberOutputSerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "object", "email", "role", "created_at"]
        read_only_fields = fields

    def get_object(self, membership: Membership) -> str:
        return "organization.member"


class MemberUpdateInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationOutputSerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    status = serializers.CharField(read_only=True)

    class Meta:
        model = Invitation
        fields = ["id", "object", "email", "role", "status", "created_at", "expires_at"]
        read_only_fields = fields

    def get_object(self, invitation: Invitation) -> str:
        return "organization.invitation"


class InvitationCreateInputSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER.value)


_MemberList = inline_serializer(
    "OrganizationMemberList",
    {"object": serializers.CharField(), "data": MemberOutputSerializer(many=True)},
)
_InvitationList = inline_serializer(
    "OrganizationInvitationList",
    {"object": serializers.CharField(), "data": InvitationOutputSerializer(many=True)},
)


def _require_admin(membership: Membership) -> None:
    if not membership.allows(Role.ADMIN):
        raise PermissionDeniedError(
            "This needs the admin role in the organization.", code="permission_denied"
        )


class MemberListApi(APIView):
    @extend_schema(operation_id="org_members_list", responses=_MemberList)
    def get(self, request, slug: str):
        membership = membership_for(user=request.user, slug=slug)
        data = MemberOutputSerializer(org_members(membership.org), many=True).data
        return _no_store(Response({"object": "list", "data": data}))


class MemberDetailApi(APIView):
    @extend_schema(
        operation_id="org_members_update",
        request=MemberUpdateInputSerializer,
        responses=MemberOutputSerializer,
    )
    def patch(self, request, slug: str, member_id: int):
        membership = membership_for(user=request.user, slug=slug)
        target = org_member_for(org=membership.org, member_id=member_id)
        payload = MemberUpdateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        updated = member_set_role(
            actor=membership, membership=target, role=payload.validated_data["role"]
        )
        return _no_store(Response(MemberOutputSerializer(updated).data))

    @extend_schema(operation_id="org_members_remove", responses={204: None})
    def delete(self, request, slug: str, member_id: int):
        """Remove a member (or leave): the keys they created here are revoked at once."""
        membership = membership_for(user=request.user, slug=slug)
        target = org_member_for(org=membership.org, member_id=member_id)
        member_remove(actor=membership, membership=target)
        return _no_store(Response(status=status.HTTP_204_NO_CONTENT))


class InvitationListCreateApi(APIView):
    @extend_schema(operation_id="org_invitations_list", responses=_InvitationList)
    def get(self, request, slug: str):
        membership = membership_for(user=request.user, slug=slug)
        _require_admin(membership)
        data = InvitationOutputSerializer(org_invitations_pending(membership.org), many=True).data
        return _no_store(Response({"object": "list", "data": data}))

    @extend_schema(
        operation_id="org_invitations_create",
        request=InvitationCreateInputSerializer,
        responses={201: InvitationOutputSerializer},
    )
    @method_decorator(ratelimit(key="user", rate="30/m", method="POST", block=True))
    def post(self, request, slug: str):
        membership = membership_for(user=request.user, slug=slug)
        payload = InvitationCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        invitation, _token = invitation_create(
            actor=membership,
            email=payload.validated_data["email"],
            role=payload.validated_data["role"],
            send=invitation_send(request),
        )
        body = InvitationOutputSerializer(invitation).data
        return _no_store(Response(body, status=status.HTTP_201_CREATED))


class InvitationDetailApi(APIView):
    @extend_schema(operation_id="org_invitations_revoke", responses=InvitationOutputSerializer)
    def delete(self, request, slug: str, invitation_id: int):
        membership = membership_for(user=request.user, slug=slug)
        _require_admin(membership)
        invitation = org_invitation_for(org=membership.org, invitation_id=invitation_id)
        invitation = invitation_revoke(actor=membership, invitation=invitation)
        return _no_store(Response(InvitationOutputSerializer(invitation).data))
