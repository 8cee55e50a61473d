"""/healthz says the process answers; /readyz says it can serve: database, Redis and at least
one healthy router for every enabled model's pool. Load balancers act on the status code."""

from __future__ import annotations

import pytest
from django.test import override_settings

from catalog.models import Router
from catalog.routing import bump_version
from core.redis import get_redis

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_redis_client():
    """readyz pings through the process's shared client: rebuild it around each test."""
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


def test_healthz_answers_without_touching_anything(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_ready_with_a_healthy_router(client, catalog, fresh_redis_client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["routers"] == "ok"
    assert checks["redis"] in {"ok", "disabled"}  # disabled: the embedded default has no Redis


def test_readyz_is_503_when_a_pool_has_no_healthy_router(client, catalog, fresh_redis_client):
    Router.objects.filter(pk=catalog["router"].pk).update(health=Router.Health.UNHEALTHY)
    bump_version()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["routers"] == "error"
    assert response.json()["checks"]["database"] == "ok"


def test_readyz_is_503_when_the_only_router_is_disabled(client, catalog, fresh_redis_client):
    Router.objects.filter(pk=catalog["router"].pk).update(enabled=False)
    bump_version()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["routers"] == "error"


def test_readyz_recovers_when_the_router_is_healthy_again(client, catalog, fresh_redis_client):
    Router.objects.filter(pk=catalog["router"].pk).update(health=Router.Health.UNHEALTHY)
    bump_version()
    assert client.get("/readyz").status_code == 503
    Router.objects.filter(pk=catalog["router"].pk).update(health=Router.Health.HEALTHY)
    bump_version()
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_redis_is_unreachable(client, catalog, fresh_redis_client):
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        get_redis.cache_clear()
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == "error"
    assert body["checks"]["database"] == "ok"


def test_health_endpoints_are_not_redirected_to_https(client, catalog, fresh_redis_client):
    # Load balancers probe over plain HTTP inside the network, even when SSL redirect is on.
    with override_settings(SECURE_SSL_REDIRECT=True):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
