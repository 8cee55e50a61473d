"""The public status page and its JSON: states, the 90-day bars, incidents, caching, and never
an internal detail (router URL, pool, session)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.models import CatalogModel, Router, RouterPool
from ops.models import Incident, IncidentUpdate, ModelDay, ModelHealth
from ops.selectors import STATUS_DAYS
from ops.services import bucket_of, health_rollup, incident_sync
from tests.builders import LLAMA, QWEN

pytestmark = pytest.mark.django_db

ROUTER_URL = "http://10.20.30.40:5999"


@pytest.fixture
def fleet(db):
    pool = RouterPool.objects.create(name="secret-pool-eu", description="miners in Frankfurt")
    Router.objects.create(
        pool=pool, name="edge-router-7", base_url=ROUTER_URL, session_id=4242, token="tok-xyz"
    )
    Router.objects.create(
        pool=pool, name="edge-router-8", base_url="http://10.20.30.41:5999", session_id=4343,
        health="unhealthy", last_error="ConnectionError",
    )  # fmt: skip
    llama = CatalogModel.objects.create(public_id=LLAMA, pool=pool, display_name="Llama 3.1 8B")
    qwen = CatalogModel.objects.create(public_id=QWEN, pool=pool, display_name="Qwen 2.5 7B")
    CatalogModel.objects.create(public_id="cortensor/hidden", pool=pool, enabled=False)
    health_rollup()
    return {"pool": pool, "llama": llama, "qwen": qwen}


@pytest.fixture
def incident(django_capture_on_commit_callbacks):
    """incident(title, status=..., models=..., started=..., resolved=...): written as staff
    write it, its commit hooks run (the banner's cache is rewritten)."""

    def make(title, *, status="investigating", models=(), started=None, resolved=None):
        started = started or timezone.now() - timedelta(minutes=30)
        with django_capture_on_commit_callbacks(execute=True):
            found = Incident.objects.create(title=title, started_at=started)
            found.affected_models.set(models)
            IncidentUpdate.objects.create(
                incident=found, status="investigating", message="We are looking.",
                created_at=started,
            )  # fmt: skip
            if status != "investigating":
                IncidentUpdate.objects.create(
                    incident=found, status=status, message=f"Now {status}.",
                    created_at=resolved or started + timedelta(minutes=10),
                )  # fmt: skip
            incident_sync(incident=found)
        return found

    return make


def test_anyone_sees_every_enabled_model_with_its_state(client, fleet):
    response = client.get("/status")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-model="cortensor/llama-3.1-8b"' in html
    assert 'data-model="cortensor/qwen-2.5-7b"' in html
    assert "cortensor/hidden" not in html
    assert html.count('data-state="degraded"') == 2  # one of the pool's two routers is down
    assert html.count('<li class="day-') == 2 * STATUS_DAYS


def test_json_has_states_days_and_incidents(incident, client, fleet):
    incident("Slow answers", models=[fleet["llama"]])
    data = client.get("/status.json").json()
    assert data["status"] == "degraded"
    by_id = {m["id"]: m for m in data["models"]}
    assert set(by_id) == {LLAMA, QWEN}
    assert by_id[LLAMA]["status"] == "degraded"
    assert len(by_id[LLAMA]["days"]) == STATUS_DAYS
    assert by_id[LLAMA]["days"][-1]["availability"] == 1.0  # degraded is still available
    assert data["incidents"][0]["title"] == "Slow answers"
    assert data["incidents"][0]["models"] == [LLAMA]
    assert data["incidents"][0]["updates"][0]["message"] == "We are looking."


def test_no_internal_detail_appears_in_the_page_or_the_json(incident, client, fleet):
    incident("Pool trouble", models=[fleet["llama"], fleet["qwen"]])
    html = client.get("/status").content.decode()
    document = client.get("/status.json").content.decode()
    for text in (html, document):
        for secret in (
            ROUTER_URL, "10.20.30.41", "secret-pool-eu", "Frankfurt", "edge-router",
            "4242", "4343", "tok-xyz", "ConnectionError",
        ):  # fmt: skip
            assert secret not in text, secret
    assert set(json.loads(document)) == {"status", "generated_at", "models", "incidents"}


def test_the_bar_shows_each_days_availability(client, fleet):
    today = timezone.now().date()
    ModelDay.objects.create(model=LLAMA, day=today - timedelta(days=3), buckets=288, down=144)
    ModelDay.objects.create(model=LLAMA, day=today - timedelta(days=2), buckets=288, degraded=10)
    data = client.get("/status.json").json()
    days = {d["date"]: d["availability"] for d in data["models"][0]["days"]}
    assert days[str(today - timedelta(days=3))] == 0.5
    assert days[str(today - timedelta(days=2))] == 1.0
    assert days[str(today - timedelta(days=4))] is None
    html = client.get("/status").content.decode()
    assert f'title="{today - timedelta(days=3):%Y-%m-%d}: 50.00%"' in html
    assert 'class="day-major"' in html and 'class="day-minor"' in html


def test_a_model_without_recent_history_has_no_known_state(client, fleet):
    ModelHealth.objects.all().update(
        bucket=bucket_of(timezone.now() - timedelta(hours=1)),
        updated_at=timezone.now() - timedelta(hours=1),
    )
    data = client.get("/status.json").json()
    assert {m["status"] for m in data["models"]} == {"unknown"}
    assert data["status"] == "unknown"


def test_open_and_recent_incidents_show_with_their_updates(incident, client, fleet):
    incident("Llama is slow", status="identified", models=[fleet["llama"]])
    incident("Qwen errors fixed", status="resolved", models=[fleet["qwen"]])
    long_ago = timezone.now() - timedelta(days=40)
    later = long_ago + timedelta(hours=1)
    incident("Ancient outage", status="resolved", started=long_ago, resolved=later)
    html = client.get("/status").content.decode()
    assert "Llama is slow" in html and "Now identified." in html and "We are looking." in html
    assert "Qwen errors fixed" in html and "Now resolved." in html
    assert "Ancient outage" not in html
    resolved = Incident.objects.get(title="Qwen errors fixed")
    assert resolved.status == "resolved" and resolved.resolved_at is not None


@pytest.mark.parametrize("path", ["/dashboard", "/docs", "/status"])
def test_an_open_incident_shows_on_the_dashboard_and_docs(incident, client, alice, fleet, path):
    incident("Elevated error rates", models=[fleet["llama"]])
    incident("Fixed yesterday", status="resolved")
    client.force_login(alice)
    html = client.get(path).content.decode()
    assert 'id="incident-banner"' in html
    assert "Elevated error rates" in html
    banner = html.split('id="incident-banner"', 1)[1].split("</div>", 1)[0]
    assert "Fixed yesterday" not in banner


def test_no_banner_without_an_open_incident(incident, client, fleet):
    incident("Over", status="resolved")
    assert 'id="incident-banner"' not in client.get("/docs").content.decode()


def test_staff_write_an_incident_in_the_admin(
    client, staff, fleet, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/ops/incident/add/",
            {
                "title": "Timeouts on Llama",
                "affected_models": [fleet["llama"].pk],
                "started_at_0": now.strftime("%Y-%m-%d"),
                "started_at_1": now.strftime("%H:%M:%S"),
                "updates-TOTAL_FORMS": "1",
                "updates-INITIAL_FORMS": "0",
                "updates-MIN_NUM_FORMS": "0",
                "updates-MAX_NUM_FORMS": "1000",
                "updates-0-status": "identified",
                "updates-0-message": "A router is overloaded.",
                "updates-0-created_at_0": now.strftime("%Y-%m-%d"),
                "updates-0-created_at_1": now.strftime("%H:%M:%S"),
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    incident = Incident.objects.get()
    assert incident.status == "identified" and incident.created_by == staff
    assert incident.updates.get().created_by == staff
    assert "Timeouts on Llama" in client.get("/status").content.decode()  # cache cleared
    assert 'id="incident-banner"' in client.get("/docs").content.decode()


def test_the_banner_costs_pages_no_query_and_comes_back_after_a_cache_flush(
    incident, client, fleet
):
    from django.core.cache import cache

    incident("Elevated latency")
    with CaptureQueriesContext(connection) as queries:
        html = client.get("/models").content.decode()
    assert "Elevated latency" in html
    assert not [q for q in queries.captured_queries if "ops_incident" in q["sql"]]
    cache.clear()
    assert "Elevated latency" not in client.get("/models").content.decode()
    health_rollup()  # beat, every minute
    assert "Elevated latency" in client.get("/models").content.decode()


def test_cached_briefly_with_a_cache_control_a_cdn_honours(client, fleet):
    response = client.get("/status")
    control = response["Cache-Control"]
    assert "public" in control and "max-age=15" in control and "s-maxage=15" in control
    assert "public" in client.get("/status.json")["Cache-Control"]
    with CaptureQueriesContext(connection) as again:
        client.get("/status.json")
    assert len(again.captured_queries) == 0  # from the cache


def test_queries_do_not_grow_with_models_days_or_incidents(incident, client, fleet):
    from django.core.cache import cache

    incident("The first", models=[fleet["llama"]])
    with CaptureQueriesContext(connection) as few:
        client.get("/status")
    for i in range(10):
        model = CatalogModel.objects.create(public_id=f"cortensor/m{i}", pool=fleet["pool"])
        incident(f"Incident {i}", status="monitoring", models=[model])
    today = timezone.now().date()
    ModelDay.objects.bulk_create(
        ModelDay(model=f"cortensor/m{i}", day=today - timedelta(days=d), buckets=288)
        for i in range(10)
        for d in range(90)
    )
    health_rollup()
    cache.clear()
    with CaptureQueriesContext(connection) as many:
        client.get("/status")
    assert len(many.captured_queries) == len(few.captured_queries)
    assert len(many.captured_queries) <= 7
    for query in many.captured_queries:
        assert "usagerecord" not in query["sql"].lower()


def test_make_run_without_beat_rolls_the_history_up_itself(client, fleet, settings):
    ModelHealth.objects.all().delete()
    assert {m["status"] for m in client.get("/status.json").json()["models"]} == {"unknown"}

    from django.core.cache import cache

    cache.clear()
    settings.DEBUG, settings.CELERY_TASK_ALWAYS_EAGER = True, True  # `make run`
    assert {m["status"] for m in client.get("/status.json").json()["models"]} == {"degraded"}
