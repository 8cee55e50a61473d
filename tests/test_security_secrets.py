"""Secrets stay secret: a router key is never in an API answer, an admin page or a log; an API
key's secret is nowhere in the database (the log side of API keys: test_apikeys_logs.py)."""

from __future__ import annotations

import logging
import re

import pytest
from django.apps import apps
from django.db import connection, models

from catalog.models import CatalogModel, Router, RouterPool
from tests.routersim import RouterSim

ROUTER_TOKEN = "rtk_9f3cQx_do_not_leak_4Zp7"
WRONG_TOKEN = "rtk_wrong_2bH8_do_not_leak_either"


@pytest.fixture(scope="module")
def keyed_sim():
    sim = RouterSim("--sessions", "1", "--token", ROUTER_TOKEN)
    yield sim
    sim.stop()


@pytest.fixture
def router(db, keyed_sim):
    pool = RouterPool.objects.create(name="keyed")
    router = Router.objects.create(
        pool=pool, base_url=keyed_sim.url, api_version="v1", session_id=1, token=ROUTER_TOKEN
    )
    CatalogModel.objects.create(
        public_id="cortensor/keyed",
        pool=pool,
        display_name="Keyed",
        chat_template="llama3",
        max_tokens=64,
        default_max_tokens=8,
    )
    return router


@pytest.fixture
def every_log(caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True
    yield caplog
    connection.force_debug_cursor = False


def _logged(caplog) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records)


def _exposed(response) -> str:
    body = b"".join(response) if response.streaming else response.content
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    return headers + "\n" + body.decode("utf-8", "replace")


def _v1_calls(client, raw):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    chat = {"model": "cortensor/keyed", "messages": [{"role": "user", "content": "hi"}]}
    yield client.get("/v1/models", **auth)
    yield client.get("/v1/models/cortensor/keyed", **auth)
    yield client.post("/v1/chat/completions", chat, content_type="application/json", **auth)
    yield client.post(
        "/v1/chat/completions", {**chat, "stream": True}, content_type="application/json", **auth
    )
    yield client.post(
        "/v1/completions",
        {"model": "cortensor/keyed", "prompt": "x"},
        content_type="application/json",
        **auth,
    )
    yield client.get("/v1/usage", **auth)


def test_router_key_is_never_in_a_v1_answer_or_a_log(client, router, alice_key, every_log):
    _, raw = alice_key
    statuses = []
    for response in _v1_calls(client, raw):
        statuses.append(response.status_code)
        assert ROUTER_TOKEN not in _exposed(response)
    assert statuses == [200] * 6  # the key was used: the router accepted it
    assert ROUTER_TOKEN not in _logged(every_log)
    # The capture saw the request path, SQL included.
    assert any(r.name == "django.db.backends" for r in every_log.records)


def test_a_rejected_router_key_is_not_echoed(client, router, alice_key, every_log):
    Router.objects.filter(pk=router.pk).update(token=WRONG_TOKEN)
    from catalog import routing

    routing._table = None
    every_log.clear()  # the UPDATE above, logged with its value, is this test's own doing
    _, raw = alice_key
    answers = list(_v1_calls(client, raw))
    failed = [r for r in answers if r.status_code >= 500]
    assert failed  # the router refused the wrong key
    for response in answers:
        assert WRONG_TOKEN not in _exposed(response)
    assert WRONG_TOKEN not in _logged(every_log)


def test_router_key_is_write_only_in_the_admin(client, staff, router):
    client.force_login(staff)
    pages = [
        f"/admin/catalog/router/{router.pk}/change/",
        "/admin/catalog/router/",
        f"/admin/catalog/routerpool/{router.pool_id}/change/",
        "/admin/catalog/router/add/",
        f"/admin/catalog/router/{router.pk}/history/",
    ]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        assert ROUTER_TOKEN not in response.content.decode(), path
    form = client.get(pages[0]).content.decode()
    assert re.search(r'<input type="password" name="token"[^>]*>', form)


def test_saving_the_router_form_with_an_empty_key_keeps_it(client, staff, router):
    client.force_login(staff)
    response = client.post(
        f"/admin/catalog/router/{router.pk}/change/",
        {
            "pool": router.pool_id,
            "name": "",
            "base_url": router.base_url,
            "api_version": "v1",
            "session_id": 1,
            "token": "",
            "weight": 1,
            "enabled": "on",
            "connect_timeout": 3,
        },
    )
    assert response.status_code == 302, re.findall(
        r"errorlist[^>]*>(.*?)</ul>", response.content.decode(), re.S
    )
    router.refresh_from_db()
    assert router.token == ROUTER_TOKEN


def _text_columns():
    for model in apps.get_models():
        fields = [
            f.attname
            for f in model._meta.concrete_fields
            if isinstance(
                f, models.CharField | models.TextField | models.JSONField | models.BinaryField
            )
        ]
        if fields:
            yield model, fields


def _database_contains(needle: str) -> list[str]:
    found = []
    for model, fields in _text_columns():
        for row in model._default_manager.values_list(*fields):
            for name, value in zip(fields, row, strict=True):
                text = (
                    bytes(value).decode("latin-1")
                    if isinstance(value, bytes | memoryview)
                    else str(value)
                )
                if needle in text:
                    found.append(f"{model._meta.label}.{name}")
    return found


def test_api_key_secrets_are_nowhere_in_the_database(client, alice):
    client.force_login(alice)
    page = client.post("/keys", {"name": "page", "nonce": "n-db"}).content.decode()
    from_page = page.split('id="new-key">', 1)[1].split("<", 1)[0]
    from_api = client.post("/api/keys", {"name": "api"}, content_type="application/json").json()
    for raw in (from_page, from_api["key"]):
        secret = raw.rsplit("_", 1)[-1] if raw.count("_") == 2 else raw[-43:]
        assert len(secret) == 43
        assert _database_contains(secret) == []
    # The scan is not blind: the key's public id is in the database.
    assert _database_contains(from_api["key"][5:17])


def test_totp_secrets_are_not_in_the_database_in_clear(alice):
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    secret = generate_totp_secret()
    TOTP.activate(alice, secret)
    assert _database_contains(secret) == []
