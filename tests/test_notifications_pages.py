"""The portal's side: the bell's unread count in the navigation (no query on a page), the list,
opening marks read, mark-all, another user's notification a 404, preferences (email per event,
thresholds per organization), webhook pages (secret shown once, delivery log, scoped to the
organization), and unsubscribe links that work without logging in."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from accounts.models import Membership
from notifications.models import EmailPreference, Event, InboxItem, OrgNotificationSettings
from notifications.services import notifications_detect, notify_key_rotated
from tests.notify_support import eager_tasks, use  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_tasks")]

UNSUBSCRIBE = re.compile(r"https?://[^/\s]+(/notifications/unsubscribe/[^\s]+)")


@pytest.fixture
def crossed(alice, alice_key, plan):
    """alice's organization at 80% of its daily requests, detected."""
    plan.requests_per_day = 10
    plan.save()
    use(alice_key[1], plan, 8)
    notifications_detect()
    return InboxItem.objects.get(user=alice)


def _unread_badge(html: str) -> str | None:
    found = re.search(r'id="nav-unread">(\d+)<', html)
    return found.group(1) if found else None


def test_the_bell_counts_unread_and_opening_marks_read(client, alice, crossed):
    client.force_login(alice)
    page = client.get("/dashboard").content.decode()
    assert _unread_badge(page) == "1"
    listing = client.get("/notifications").content.decode()
    assert crossed.notification.title in listing
    opened = client.get(f"/notifications/{crossed.pk}")
    assert opened.status_code == 200
    assert "8 of 10 requests today (80%)" in opened.content.decode()
    crossed.refresh_from_db()
    assert crossed.read_at is not None
    assert _unread_badge(client.get("/dashboard").content.decode()) is None


def test_the_bell_adds_no_query_to_a_page(client, alice, crossed, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        client.get("/models")
    assert not any("notifications_inboxitem" in q["sql"] for q in queries.captured_queries)


def test_mark_one_and_mark_all_as_read(client, alice, alice_key, crossed):
    notify_key_rotated(key=alice_key[0], actor=None)
    client.force_login(alice)
    assert _unread_badge(client.get("/notifications").content.decode()) == "2"
    client.post(f"/notifications/{crossed.pk}/read")
    assert _unread_badge(client.get("/notifications").content.decode()) == "1"
    client.post("/notifications/read")
    assert _unread_badge(client.get("/notifications").content.decode()) is None
    assert not InboxItem.objects.filter(user=alice, read_at__isnull=True).exists()


def test_another_users_notification_is_a_404(client, bob, crossed):
    client.force_login(bob)
    assert client.get(f"/notifications/{crossed.pk}").status_code == 404
    assert client.post(f"/notifications/{crossed.pk}/read").status_code == 404
    crossed.refresh_from_db()
    assert crossed.read_at is None


def test_pages_need_a_login(client):
    for path in ("/notifications", "/notifications/settings", "/notifications/webhooks"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_unsubscribe_works_without_logging_in(client, alice, alice_key, plan, crossed):
    [message] = mail.outbox
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = UNSUBSCRIBE.search(message.body).group(1)
    shown = client.get(path)  # a link scanner's GET changes nothing
    assert shown.status_code == 200 and b"Stop emailing alice@example.com" in shown.content
    assert not EmailPreference.objects.filter(user=alice).exists()

    done = client.post(path)
    assert done.status_code == 200 and b"no longer gets emails" in done.content
    assert EmailPreference.objects.get(user=alice).muted == [Event.QUOTA]

    use(alice_key[1], plan, 2)  # 100%: recorded and listed, not mailed to alice
    notifications_detect()
    assert len(mail.outbox) == 1
    assert InboxItem.objects.filter(user=alice).count() == 2


def test_a_forged_unsubscribe_link_is_refused(client, alice):
    response = client.post("/notifications/unsubscribe/not-a-signed-token")
    assert response.status_code == 400 and b"not valid" in response.content
    assert client.get("/notifications/unsubscribe/x:y:z").status_code == 400


def test_email_preferences_per_user(client, alice, alice_key, crossed):
    client.force_login(alice)
    assert client.get("/notifications/settings").status_code == 200
    emailed = [e for e in Event.values if e != Event.KEY_ROTATED]
    response = client.post("/notifications/settings", {"emailed": emailed})
    assert response.status_code == 302
    assert EmailPreference.objects.get(user=alice).muted == [Event.KEY_ROTATED]
    before = len(mail.outbox)
    notify_key_rotated(key=alice_key[0], actor=None)
    assert len(mail.outbox) == before
    bad = client.post("/notifications/settings", {"emailed": ["nope"]})
    assert bad.status_code == 400


def test_thresholds_per_organization_by_its_admins(client, alice, bob):
    from accounts.services import member_add, org_create

    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role="member")
    client.force_login(alice)
    client.post("/org/switch", {"org": org.slug})
    assert (
        client.post("/notifications/thresholds", {"thresholds": ["50", "100"]}).status_code == 302
    )
    assert OrgNotificationSettings.objects.get(org=org).thresholds == [50, 100]
    assert client.post("/notifications/thresholds", {"thresholds": ["42"]}).status_code == 400

    client.force_login(bob)
    client.post("/org/switch", {"org": org.slug})
    assert client.post("/notifications/thresholds", {"thresholds": ["50"]}).status_code == 404


def test_webhook_pages(client, alice, bob, settings):
    settings.DEBUG = False
    client.force_login(alice)
    refused = client.post("/notifications/webhooks", {"url": "https://127.0.0.1/hook"})
    assert refused.status_code == 400 and b"Refused" in refused.content
    refused = client.post("/notifications/webhooks", {"url": "http://example.com/hook"})
    assert refused.status_code == 400 and b"must use https" in refused.content

    settings.DEBUG = True
    created = client.post("/notifications/webhooks", {"url": "http://127.0.0.1:9/hook"})
    assert created.status_code == 200
    secret = re.search(r'id="webhook-secret-value">(whsec_[^<]+)<', created.content.decode())
    assert secret
    listing = client.get("/notifications/webhooks").content.decode()
    assert "http://127.0.0.1:9/hook" in listing and secret.group(1) not in listing  # once
    from notifications.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.get()
    assert client.get(f"/notifications/webhooks/{endpoint.pk}").status_code == 200
    rotated = client.post(f"/notifications/webhooks/{endpoint.pk}/rotate").content.decode()
    assert "whsec_" in rotated and secret.group(1) not in rotated

    client.force_login(bob)  # another organization's endpoint: a 404 everywhere
    assert client.get(f"/notifications/webhooks/{endpoint.pk}").status_code == 404
    assert client.post(f"/notifications/webhooks/{endpoint.pk}/delete").status_code == 404
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()

    client.force_login(alice)
    client.post(f"/notifications/webhooks/{endpoint.pk}/delete")
    assert not WebhookEndpoint.objects.exists()


def test_the_admin_lists_notifications_and_resends_deliveries(
    client, staff, alice, crossed, settings
):
    from notifications.models import WebhookDelivery, WebhookEndpoint

    endpoint = WebhookEndpoint.objects.create(org=crossed.notification.org, url="https://x.test/")
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        notification=crossed.notification,
        event_id=crossed.notification.event_id,
        event=crossed.notification.event,
        body="{}",
        status="failed",
    )
    client.force_login(staff)
    listing = client.get("/admin/notifications/notification/?q=" + crossed.notification.event_id)
    assert listing.status_code == 200 and crossed.notification.title in listing.content.decode()
    detail = client.get(f"/admin/notifications/notification/{crossed.notification.pk}/change/")
    assert detail.status_code == 200 and alice.email in detail.content.decode()
    deliveries = client.get("/admin/notifications/webhookdelivery/?q=" + delivery.event_id)
    assert deliveries.status_code == 200 and "x.test" in deliveries.content.decode()
    resend = client.post(
        "/admin/notifications/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
    )
    assert resend.status_code == 302
    assert WebhookDelivery.objects.filter(event_id=delivery.event_id).count() == 2
    from audit.models import StaffAction

    assert StaffAction.objects.get(action="webhook.resend").actor == staff  # on record
    assert client.get("/admin/notifications/webhookendpoint/").status_code == 200


def test_members_see_no_webhook_pages(client, alice, bob):
    from accounts.services import member_add, org_create

    org = org_create(name="Acme", owner=alice)
    member_add(org=org, user=bob, role="member")
    client.force_login(bob)
    client.post("/org/switch", {"org": org.slug})
    assert client.get("/notifications/webhooks").status_code == 404
    assert Membership.objects.filter(org=org, user=bob).exists()


# --- the API (session + CSRF) ---------------------------------------------------------------


def test_the_api_lists_and_marks_read(client, alice, bob, alice_key, crossed):
    notify_key_rotated(key=alice_key[0], actor=None)
    client.force_login(alice)
    listing = client.get("/api/notifications").json()
    assert listing["object"] == "list" and listing["unread"] == 2
    assert {i["type"] for i in listing["data"]} == {Event.QUOTA, Event.KEY_ROTATED}
    assert all(i["event_id"].startswith("evt_") and not i["read"] for i in listing["data"])
    quota = next(i for i in listing["data"] if i["type"] == Event.QUOTA)
    assert quota["details"]["used"] == 8 and quota["details"]["limit"] == 10

    client.force_login(bob)  # another user's ids: nothing marked
    assert client.post(
        "/api/notifications/read", {"ids": [crossed.pk]}, content_type="application/json"
    ).json() == {"marked": 0}

    client.force_login(alice)
    marked = client.post(
        "/api/notifications/read", {"ids": [crossed.pk]}, content_type="application/json"
    )
    assert marked.json() == {"marked": 1}
    assert client.get("/api/notifications").json()["unread"] == 1
    assert client.post("/api/notifications/read", {}, content_type="application/json").json() == {
        "marked": 1
    }


@pytest.mark.parametrize(
    "body", [{"ids": "all"}, {"ids": [0]}, {"ids": ["x"]}, {"ids": list(range(1, 1200))}]
)
def test_the_api_refuses_bad_input_in_the_error_shape(client, alice, body):
    client.force_login(alice)
    response = client.post("/api/notifications/read", body, content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_the_api_needs_a_login(client):
    response = client.get("/api/notifications")
    assert response.status_code in (401, 403) and "error" in response.json()


def test_make_run_without_beat_catches_up_when_a_page_shows_the_bell(
    client, alice, alice_key, plan, settings
):
    settings.DEBUG, settings.CELERY_TASK_ALWAYS_EAGER = True, True  # `make run`
    plan.requests_per_day = 10
    plan.save()
    use(alice_key[1], plan, 8)
    client.force_login(alice)
    assert _unread_badge(client.get("/dashboard").content.decode()) == "1"


def test_production_pages_never_run_the_detector(client, alice, alice_key, plan):
    plan.requests_per_day = 10
    plan.save()
    use(alice_key[1], plan, 8)
    client.force_login(alice)
    assert _unread_badge(client.get("/dashboard").content.decode()) is None
    assert not InboxItem.objects.exists()
