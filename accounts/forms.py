"""Forms for the organization pages: input validation only; the services do the work."""

from __future__ import annotations

from django import forms

from accounts.models import Role

ROLE_CHOICES = [
    (Role.MEMBER.value, "Member: creates keys, revokes their own, sees usage"),
    (Role.ADMIN.value, "Admin: also members, invitations and every key"),
    (Role.OWNER.value, "Owner: everything, plan and the organization itself"),
]


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254, help_text="We email them a link, valid 7 days.")
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.MEMBER.value)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class RemoveMemberForm(forms.Form):
    confirm = forms.BooleanField(
        required=True,
        label="Yes, remove this member and revoke the keys they created here",
        error_messages={"required": "Tick the box to confirm."},
    )


class OrgCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Your team or company, e.g. “Acme”.")


class DeleteOrgForm(forms.Form):
    confirm = forms.BooleanField(
        required=True,
        label="Yes, delete this organization and all its API keys",
        error_messages={"required": "Tick the box to confirm."},
    )
