from django.urls import path

from accounts import api, views

app_name = "accounts"

urlpatterns = [
    path("org", views.org_page, name="org"),
    path("org/new", views.org_new, name="org-new"),
    path("org/switch", views.org_switch, name="org-switch"),
    path("org/delete", views.org_delete_page, name="org-delete"),
    path("org/invitations", views.org_invite, name="org-invite"),
    path(
        "org/invitations/<int:invitation_id>/revoke",
        views.org_invitation_revoke,
        name="org-invitation-revoke",
    ),
    path("org/members/<int:member_id>/role", views.org_member_role, name="org-member-role"),
    path("org/members/<int:member_id>/remove", views.org_member_remove, name="org-member-remove"),
    path("org/join/<str:token>", views.org_join, name="join"),
    path("api/orgs/<slug:slug>/members", api.MemberListApi.as_view(), name="api-members"),
    path(
        "api/orgs/<slug:slug>/members/<int:member_id>",
        api.MemberDetailApi.as_view(),
        name="api-member",
    ),
    path(
        "api/orgs/<slug:slug>/invitations",
        api.InvitationListCreateApi.as_view(),
        name="api-invitations",
    ),
    path(
        "api/orgs/<slug:slug>/invitations/<int:invitation_id>",
        api.InvitationDetailApi.as_view(),
        name="api-invitation",
    ),
]
