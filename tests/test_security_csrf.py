"""CSRF on every route a browser session can reach: a POST without the token is refused.

The routes come from the URL resolver, so a new page or form is covered the day it is added.
/v1/ is the one exception, and it is tested for why: a session cookie authenticates nothing
there (only an API key in the Authorization header does), so there is nothing to forge.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from apikeys.models import ApiKey
from tests.security_routes import all_routes

API_KEY_ONLY = "v1/"
# Unsubscribe links authenticate by their signature, not the session, and mail clients POST to
# them without a page (RFC 8058 one-click): a forged POST needs the signed token it forges.
SIGNED_LINK_ONLY = "notifications/unsubscribe/"


@pytest.fixture
def browser(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


@pytest.fixture
def values(alice, alice_key):
    from accounts.models import Invitation, Membership
    from accounts.selectors import personal_org

    key, _ = alice_key
    org = personal_org(alice)
    invitation = Invitation.objects.create(org=org, email="x@example.com", token_hash="1" * 64)
    return {
        "key_id": key.pk,
        "slug": org.slug,
        "member_id": Membership.objects.get(org=org, user=alice).pk,
        "invitation_id": invitation.pk,
        "token": "not-a-token",
        "object_id": key.pk,
        "id": alice.pk,
        "content_type_id": ContentType.objects.get_for_model(ApiKey).pk,
        "model_id": "cortensor/llama-3.1-8b",
        "key": "abc:def",
        "uidb36": "1",
        "app_label": "apikeys",
        "url": "apikeys/apikey/",
        "msg_id": "20261127-0",
        "pk": 1,
        "action": "drain",
        "name": "requests",
        "request_id": "req_not_there",
        "item_id": 1,
        "endpoint_id": 1,
    }


def test_every_post_without_a_token_is_refused(browser, alice_key, values):
    key, _ = alice_key
    refused, not_refused = [], []
    for route in all_routes():
        if route.pattern.lstrip("^").startswith((API_KEY_ONLY, SIGNED_LINK_ONLY)):
            continue
        path = route.path(values)
        response = browser.post(path, {"name": "forged", "confirm": "on"})
        if response.status_code == 403 and b"CSRF" in response.content:
            refused.append(route.pattern)
        else:
            not_refused.append(f"{route.pattern} -> {response.status_code}")
    assert not not_refused, "POST without a CSRF token was not refused:\n" + "\n".join(not_refused)
    assert len(refused) > 50
    # Nothing happened: no key was made or revoked.
    assert not ApiKey.objects.filter(name="forged").exists()
    key.refresh_from_db()
    assert key.revoked_at is None
    assert key.rotated_at is None


def test_unsubscribe_needs_its_signed_token_not_a_csrf_token(browser, alice):
    from notifications.models import EmailPreference

    response = browser.post("/notifications/unsubscribe/forged-token")
    assert response.status_code == 400
    assert not EmailPreference.objects.filter(user=alice).exists()


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_unsafe_methods_need_the_token_too(browser, alice_key, method):
    key, _ = alice_key
    response = getattr(browser, method)(f"/api/keys/{key.pk}")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    key.refresh_from_db()
    assert key.revoked_at is None


def test_with_the_token_the_same_posts_work(browser, alice_key):
    """The refusals above are about the token, not the routes: with it, forms work."""
    key, _ = alice_key
    browser.get("/keys")
    token = browser.cookies["csrftoken"].value

    page = browser.post("/keys", {"name": "made", "nonce": "n-csrf", "csrfmiddlewaretoken": token})
    api = browser.post(
        f"/api/keys/{key.pk}/revoke", content_type="application/json", HTTP_X_CSRFTOKEN=token
    )

    assert page.status_code in {200, 302}
    assert ApiKey.objects.filter(name="made").exists()
    assert api.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_a_session_cookie_authenticates_nothing_on_v1(browser, catalog):
    chat = browser.post(
        "/v1/chat/completions",
        {"model": "cortensor/llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
    )
    models = browser.get("/v1/models")
    usage = browser.get("/v1/usage")
    for response in (chat, models, usage):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.S | re.I)


def test_every_post_form_on_a_page_carries_the_token(browser, staff):
    staff_browser = Client(enforce_csrf_checks=True)
    staff_browser.force_login(staff)
    forms = 0
    for route in all_routes():
        if route.params or route.pattern.lstrip("^").startswith(API_KEY_ONLY):
            continue
        client = staff_browser if route.pattern.startswith("admin/") else browser
        response = client.get(route.path())
        if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
            continue
        for form in FORM.findall(response.content.decode()):
            if re.search(r"method=[\"']?post", form, re.I):
                forms += 1
                assert 'name="csrfmiddlewaretoken"' in form, (route.pattern, form[:300])
    assert forms >= 5
