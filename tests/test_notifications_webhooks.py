"""Webhooks against a real HTTP receiver on 127.0.0.1 that checks the signature: signed JSON
events with an id to deduplicate on, retries with backoff after the receiver's 500s, then
success; the delivery log; the secret shown once and rotatable; endpoints that resolve to
loopback, link-local or private addresses refused (at registration and at delivery) unless
DEBUG; http:// only with DEBUG; an endpoint failing for 3 days disabled and its owners told."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import Membership
from core.errors import InvalidRequest
from notifications.models import WebhookDelivery, WebhookEndpoint
from notifications.services import (
    notifications_detect,
    notify_key_rotated,
    webhook_endpoint_create,
    webhook_endpoint_rotate,
    webhook_resend,
)
from notifications.tasks import retry_webhooks
from tests.notify_support import Receiver, eager_tasks, use, wait_until  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def owner(alice):
    return Membership.objects.select_related("org", "user").get(user=alice, org__personal=True)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def local_ok(settings):
    """DEBUG: http:// and loopback receivers are allowed (as on a developer's machine)."""
    settings.DEBUG = True
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0  # retries are due at once: no test waits minutes


@pytest.fixture
def endpoint(owner, receiver, local_ok):
    endpoint, secret = webhook_endpoint_create(actor=owner, url=receiver.url)
    receiver.secret = secret
    return endpoint


def _trigger(alice_key, plan):
    plan.requests_per_day = 10
    plan.save()
    use(alice_key[1], plan, 8)
    notifications_detect()


def test_a_signed_event_reaches_the_receiver(endpoint, receiver, alice_key, plan):
    _trigger(alice_key, plan)
    [got] = wait_until(lambda: receiver.received, what="a delivery")
    assert got["verified"]
    event = got["event"]
    assert event["id"].startswith("evt_") and event["type"] == "quota.threshold"
    assert event["data"]["threshold"] == 80 and event["data"]["used"] == 8
    assert event["organization"]["id"] == endpoint.org_id
    assert got["headers"]["Cortensor-Event-Id"] == event["id"]
    [delivery] = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert (delivery.status, delivery.response_code, delivery.attempts) == ("succeeded", 200, 1)


def test_500s_are_retried_with_backoff_then_succeed(endpoint, receiver, alice_key, plan, settings):
    receiver.statuses = [500, 500]
    _trigger(alice_key, plan)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    def delivered():
        retry_webhooks()  # the beat task: sends the deliveries that are due
        delivery.refresh_from_db()
        return delivery.status == "succeeded"

    wait_until(delivered, what="the third attempt to succeed")
    assert [r["status"] for r in receiver.received] == [500, 500, 200]
    assert all(r["verified"] for r in receiver.received)
    assert len({r["event"]["id"] for r in receiver.received}) == 1  # one event, deduplicable
    assert (delivery.attempts, delivery.response_code) == (3, 200)


def test_the_backoff_doubles_and_stops_after_the_window(settings):
    from notifications.services import _retry_delay

    settings.WEBHOOK_RETRY_BASE_SECONDS = 60
    settings.WEBHOOK_RETRY_MAX_SECONDS = 4 * 3600
    assert [_retry_delay(n) for n in range(1, 6)] == [60, 120, 240, 480, 960]
    assert _retry_delay(20) == 4 * 3600


def test_a_failure_past_the_retry_window_fails_the_delivery(endpoint, receiver, alice_key, plan):
    receiver.statuses = [500]
    WebhookDelivery.objects.all().delete()
    _trigger(alice_key, plan)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "pending" and delivery.response_code == 500
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    receiver.statuses = [500]
    retry_webhooks()
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2


def test_an_endpoint_failing_for_3_days_is_disabled_and_the_owners_told(
    endpoint, receiver, alice, alice_key, plan
):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=3, minutes=1)
    )
    receiver.statuses = [503]
    _trigger(alice_key, plan)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "failing for 3 days"
    [told] = [m for m in mail.outbox if "Webhook endpoint disabled" in m.subject]
    assert told.to == [alice.email] and endpoint.url in told.body
    notify_key_rotated(key=alice_key[0], actor=None)  # a later event: not sent to it
    assert len(receiver.received) == 1


def test_the_secret_rotates_and_the_old_one_stops_signing(
    endpoint, receiver, owner, alice_key, plan
):
    old = receiver.secret
    new = webhook_endpoint_rotate(actor=owner, endpoint=endpoint)
    assert new != old and new.startswith("whsec_")
    _trigger(alice_key, plan)
    [got] = wait_until(lambda: receiver.received)
    assert not got["verified"]  # the receiver still holds the old secret
    receiver.secret = new
    assert receiver.verify(got["headers"]["Cortensor-Signature"], got["body"])


def test_resend_sends_the_same_event_again(endpoint, receiver, alice_key, plan):
    _trigger(alice_key, plan)
    first = WebhookDelivery.objects.get(endpoint=endpoint)
    again = webhook_resend(delivery=first)
    wait_until(lambda: len(receiver.received) == 2)
    assert again.pk != first.pk
    assert receiver.received[0]["event"]["id"] == receiver.received[1]["event"]["id"]


# --- addresses and schemes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_addresses_are_refused_without_debug(owner, url):
    with pytest.raises(InvalidRequest) as refused:
        webhook_endpoint_create(actor=owner, url=url)
    assert refused.value.code == "webhook_address_refused"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", ["http://example.com/hook", "ftp://example.com/", "not a url"])
def test_only_https_without_debug(owner, url):
    with pytest.raises(InvalidRequest) as refused:
        webhook_endpoint_create(actor=owner, url=url)
    assert refused.value.code in ("webhook_https_required", "invalid_url")


def test_the_address_is_checked_again_at_delivery(endpoint, receiver, alice_key, plan, settings):
    settings.DEBUG = False  # registered while allowed; DNS (here: the rule) changed since
    _trigger(alice_key, plan)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_error.startswith("refused:")
    assert receiver.received == []  # nothing left the building


def test_members_cannot_register_endpoints(bob, alice, make_user, local_ok, receiver):
    from accounts.services import member_add, org_create
    from core.errors import PermissionDeniedError

    org = org_create(name="Acme", owner=alice)
    member = member_add(org=org, user=bob, role="member")
    with pytest.raises(PermissionDeniedError):
        webhook_endpoint_create(actor=member, url=receiver.url)


# --- TLS: the checked address, the URL's host name verified ---------------------------------


@pytest.fixture
def tls_receiver(tmp_path, settings):
    """An HTTPS receiver on 127.0.0.1 with a certificate for `localhost` from a CA of our own
    (openssl), which WEBHOOK_CA_BUNDLE trusts."""
    import ssl
    import subprocess

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    settings.WEBHOOK_CA_BUNDLE = str(tmp_path / "ca.pem")
    receiver = Receiver()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    yield receiver
    receiver.close()


def test_https_delivery_verifies_the_urls_host_on_the_checked_address(
    owner, tls_receiver, local_ok, alice_key, plan
):
    port = tls_receiver.server.server_address[1]
    endpoint, secret = webhook_endpoint_create(actor=owner, url=f"https://localhost:{port}/h")
    tls_receiver.secret = secret
    _trigger(alice_key, plan)
    [got] = wait_until(lambda: tls_receiver.received, what="an HTTPS delivery")
    assert got["verified"] and got["headers"]["Host"] == f"localhost:{port}"
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == "succeeded"


def test_https_to_a_name_the_certificate_does_not_carry_fails(
    owner, tls_receiver, local_ok, alice_key, plan
):
    port = tls_receiver.server.server_address[1]
    endpoint, _ = webhook_endpoint_create(actor=owner, url=f"https://127.0.0.1:{port}/h")
    _trigger(alice_key, plan)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "pending" and delivery.response_code is None
    assert "SSL" in delivery.last_error or "certificate" in delivery.last_error.lower()
    assert tls_receiver.received == []
