"""Mail accounts sends itself (allauth sends its own): through allauth's mail machinery, so
it has the portal's layout (templates/account/email/base_message.txt) and subject prefix."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from django.urls import reverse


def invitation_send(request):
    """A sender for `invitation_create`: allauth's mail machinery, in the portal's layout."""

    def send(invitation, token: str) -> None:
        url = request.build_absolute_uri(reverse("accounts:join", args=[token]))
        get_adapter(request).send_mail(
            "account/email/org_invitation",
            invitation.email,
            {
                "invitation": invitation,
                "org_name": invitation.org.name,
                "inviter": invitation.invited_by.email if invitation.invited_by else "",
                "accept_url": url,
            },
        )

    return send
