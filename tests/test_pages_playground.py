"""The playground: a logged-in user's chat goes through the /v1/ pipeline as their
"Playground" key, streamed, metered and limited, without a raw key ever reaching the browser."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.selectors import personal_org
from apikeys.models import ApiKey
from apikeys.services import PLAYGROUND_KEY_NAME, apikey_playground_principal, apikey_revoke
from metering.models import UsageRecord

pytestmark = pytest.mark.django_db
LLAMA = "cortensor/llama-3.1-8b"


def _turn(**overrides) -> str:
    body = {
        "model": LLAMA,
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 3,
        "temperature": 0.5,
    }
    body.update(overrides)
    return json.dumps(body)


def _post(client, data, **headers):
    return client.post("/playground/chat", data=data, content_type="application/json", **headers)


def _events(response) -> list:
    raw = b"".join(response.streaming_content).decode()
    events = []
    for block in raw.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_the_page_needs_a_login(client):
    response = client.get("/playground")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_page_offers_the_plans_models_and_names_the_playground_key(client, alice, catalog):
    client.force_login(alice)
    response = client.get("/playground")
    body = response.content.decode()
    assert response.status_code == 200
    assert f'<option value="{LLAMA}" data-max-tokens="1024">' in body
    assert '<option value="cortensor/qwen-2.5-7b"' in body
    assert "“Playground”" in body and 'href="/keys"' in body
    assert "js/playground.js" in body
    assert 'name="csrfmiddlewaretoken"' in body
    assert "ctsk_" not in body


def test_a_turn_streams_through_the_pipeline_and_is_metered_to_the_playground_key(
    client, alice, catalog
):
    client.force_login(alice)
    response = _post(client, _turn())
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert "x-ratelimit-remaining-requests" in response
    events = _events(response)
    assert events[-1] == "[DONE]"
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices")
    )
    assert text == " word0 word1 word2"
    assert events[-2]["usage"]["completion_tokens"] == 3  # include_usage is always on
    key = ApiKey.objects.get(owner=alice)
    assert key.name == PLAYGROUND_KEY_NAME
    record = UsageRecord.objects.get(user_id=alice.pk)
    assert (record.key_id, record.model, record.outcome, record.streamed) == (
        key.pk,
        LLAMA,
        "ok",
        True,
    )
    assert record.request_id == response["x-request-id"]


def test_later_turns_reuse_the_key_and_a_revoked_one_is_replaced(client, alice, catalog):
    client.force_login(alice)
    _events(_post(client, _turn()))
    _events(
        _post(
            client,
            _turn(
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Again"},
                ]
            ),
        )
    )
    assert ApiKey.objects.filter(owner=alice).count() == 1
    apikey_revoke(key=ApiKey.objects.get(owner=alice))
    _events(_post(client, _turn()))
    keys = ApiKey.objects.filter(owner=alice)
    assert keys.count() == 2 and keys.active().count() == 1
    assert set(UsageRecord.objects.values_list("key_id", flat=True)) == {k.pk for k in keys}


def test_the_principal_is_the_users_and_respects_the_keys_own_caps(alice, bob):
    principal = apikey_playground_principal(user=alice)
    key = ApiKey.objects.get(pk=principal.key_id)
    assert (principal.owner_id, principal.owner_email, principal.plan_id) == (
        alice.pk,
        alice.email,
        personal_org(alice).plan_id,
    )
    assert key.owner == alice and key.name == "Playground"
    key.requests_per_minute = 7
    key.save()
    again = apikey_playground_principal(user=alice)
    assert again.key_id == principal.key_id and again.requests_per_minute == 7
    assert apikey_playground_principal(user=bob).key_id != principal.key_id


def test_csrf_is_required(alice, catalog):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert _post(client, _turn()).status_code == 403
    client.get("/playground")
    token = client.cookies["csrftoken"].value
    response = _post(client, _turn(), HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert _events(response)[-1] == "[DONE]"


def test_anonymous_callers_get_a_json_401(client, catalog):
    response = _post(client, _turn())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "login_required"
    assert not ApiKey.objects.exists()


def test_only_post(client, alice):
    client.force_login(alice)
    assert client.get("/playground/chat").status_code == 405


@pytest.mark.parametrize(
    ("data", "status", "code", "param"),
    [
        ("{not json", 400, "invalid_request_error", None),
        ("[1, 2]", 400, "invalid_request_error", None),
        (_turn(messages=[]), 400, "invalid_request_error", "messages"),
        (_turn(temperature=9), 400, "invalid_request_error", "temperature"),
        (_turn(max_tokens=100_000), 400, "invalid_request_error", "max_tokens"),
        (_turn(model="cortensor/nope"), 404, "model_not_found", "model"),
    ],
)
def test_bad_turns_get_the_apis_json_errors(client, alice, catalog, data, status, code, param):
    client.force_login(alice)
    response = _post(client, data)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


def test_a_model_outside_the_plan_is_refused(client, make_user, catalog):
    from accounts.models import Plan

    narrow = Plan.objects.create(name="narrow", all_models=False)
    catalog["qwen"].plans.add(narrow)
    carol = make_user("carol@example.com", plan_=narrow)
    client.force_login(carol)
    body = client.get("/playground").content.decode()
    assert LLAMA not in body and "cortensor/qwen-2.5-7b" in body
    assert _post(client, _turn()).json()["error"]["code"] == "model_not_found"


def test_the_playground_is_rate_limited_per_user(client, alice, bob, catalog, settings):
    settings.PLAYGROUND_RATE = "2/m"
    client.force_login(alice)
    assert _post(client, "{bad").status_code == 400
    assert _post(client, "{bad").status_code == 400
    limited = _post(client, _turn())
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited["Retry-After"]) <= 60
    client.force_login(bob)
    assert _post(client, "{bad").status_code == 400  # bob has his own allowance


def test_a_users_own_key_named_playground_is_not_the_playgrounds(client, alice, catalog, make_key):
    own, _ = make_key(alice, PLAYGROUND_KEY_NAME)
    client.force_login(alice)
    _events(_post(client, _turn()))
    record = UsageRecord.objects.get(user_id=alice.pk)
    playground = ApiKey.objects.get(owner=alice, playground=True)
    assert playground.pk != own.pk and record.key_id == playground.pk
    own.refresh_from_db()
    assert own.playground is False
    # The docs keep showing the user's own key, and the dashboard doesn't mark it.
    assert own.public_id in client.get("/docs").content.decode()
    assert client.get("/dashboard").context["recent"][0][1].playground is True


def test_playground_calls_update_last_used(client, alice, catalog):
    client.force_login(alice)
    _events(_post(client, _turn()))
    key = ApiKey.objects.get(owner=alice, playground=True)
    assert key.last_used_at is not None
    page = client.get("/keys").content.decode()
    row = page[page.index(f'id="key-{key.pk}"') :]
    row = row[: row.index("</tr>")]
    assert row.count("data-relative") == 2  # created and last used (expires: never)


def test_the_migration_flags_only_keys_the_playground_made(alice, make_key):
    from importlib import import_module

    from django.apps import apps

    from apikeys.services import apikey_create

    flag = import_module("apikeys.migrations.0002_apikey_playground_flag").flag_playground_keys
    made, _ = apikey_create(owner=alice, name=PLAYGROUND_KEY_NAME, actor_label="playground")
    own, _ = make_key(alice, PLAYGROUND_KEY_NAME)
    assert not made.playground
    flag(apps, None)
    made.refresh_from_db()
    own.refresh_from_db()
    assert made.playground and not own.playground
