"""The admin as an operator console: branded and ordered, the fleet dashboard, the pool page's
actions with confirmation, weights with their shares, "try this model / router", and every
staff action on record. Routers are real simulators over HTTP."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Plan
from audit.models import StaffAction
from catalog.models import CatalogModel, Router, RouterPool
from catalog.services import router_record_health
from metering.models import UsageRecord
from ops.models import Incident
from ops.services import health_rollup
from tests.builders import LLAMA, usage_records

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def fleet(db, sims, plan):
    pool = RouterPool.objects.create(name="eu")
    routers = [
        Router.objects.create(
            pool=pool, name=f"eu-{i}", base_url=sim.url, session_id=1, token="default-dev-token"
        )
        for i, sim in enumerate(sims)
    ]
    model = CatalogModel.objects.create(
        public_id=LLAMA, pool=pool, display_name="Llama", default_max_tokens=16
    )
    health_rollup()
    return {"pool": pool, "routers": routers, "model": model}


# --- branded and ordered ----------------------------------------------------------------------


def test_the_admin_is_branded_and_in_the_order_an_operator_works(staff_client):
    html = staff_client.get("/admin/").content.decode()
    assert "Cortensor Portal operations" in html
    assert "Django administration" not in html
    positions = [html.index(f">{name}<") for name in ("Fleet", "Customers", "Usage", "Access")]
    assert positions == sorted(positions)
    fleet = html[positions[0] : positions[1]]
    assert fleet.index("Router pools") < fleet.index("Routers") < fleet.index("Models")
    customers = html[positions[1] : positions[2]]
    assert customers.index("Users") < customers.index("Plans") < customers.index("API keys")
    access = html[positions[3] :]
    assert access.index("Email addresses") < access.index("Groups")
    assert "Apikeys" not in html


# --- the fleet dashboard ----------------------------------------------------------------------


def test_the_dashboard_says_what_is_wrong_and_links_to_it(staff_client, fleet):
    broken = fleet["routers"][1]
    router_record_health(router=broken, error="ConnectionError")
    health_rollup()
    Incident.objects.create(title="EU routers flaky", started_at=timezone.now())
    html = staff_client.get("/admin/").content.decode()
    problems = html.split('id="fleet-problems"', 1)[1].split("</ul>", 1)[0]
    assert "Router eu-1 of pool eu is unhealthy" in problems
    assert f"Model {LLAMA} is degraded" in problems
    assert f'href="/admin/catalog/router/{broken.pk}/change/"' in html
    assert f'href="/admin/catalog/routerpool/{fleet["pool"].pk}/change/"' in html
    assert "EU routers flaky" in html
    assert 'id="fleet-backlogs"' in html


def test_a_healthy_fleet_says_so(staff_client, fleet):
    html = staff_client.get("/admin/").content.decode()
    assert 'id="fleet-ok"' in html


def test_the_dashboard_shows_each_models_last_fifteen_minutes(
    staff_client, fleet, alice, alice_key
):
    key, _ = alice_key
    usage_records(alice, key, n=9, ttfb_ms=120)
    usage_records(alice, key, n=1, outcome="upstream_error", http_status=502)
    health_rollup()
    html = staff_client.get("/admin/").content.decode()
    row = html.split(f'data-model="{LLAMA}"', 1)[1].split("</tr>", 1)[0]
    assert "<td>10</td>" in row and "10%" in row and "120 ms" in row


def test_dashboard_queries_do_not_grow_with_the_fleet_and_skip_usage_records(staff_client, fleet):
    from django.core.cache import cache

    cache.clear()
    with CaptureQueriesContext(connection) as few:
        staff_client.get("/admin/")
    for p in range(3):
        pool = RouterPool.objects.create(name=f"pool-{p}")
        for r in range(4):
            Router.objects.create(pool=pool, base_url=f"http://10.0.{p}.{r}:5010", session_id=1)
        CatalogModel.objects.create(public_id=f"cortensor/m{p}", pool=pool)
    health_rollup()
    cache.clear()
    with CaptureQueriesContext(connection) as many:
        staff_client.get("/admin/")
    assert len(many.captured_queries) == len(few.captured_queries)
    assert not [q for q in many.captured_queries if "metering_usagerecord" in q["sql"]]


def test_the_dashboard_is_staff_only(client, alice):
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302


# --- requests in flight, every worker's -------------------------------------------------------


@pytest.fixture
def in_flight(fleet):
    """Requests held open in this process's balancer (and, with Redis, another worker's
    published figures): yields a function that opens one on a router."""
    from django.conf import settings

    from catalog.routing import RouterInfo
    from core.redis import get_redis
    from inference import balancer, inflight

    balancer.reset()

    def hold(router):
        info = RouterInfo(
            id=router.pk, pool_id=router.pool_id, base_url=router.base_url, api_version="v1",
            session_id=1, token="t", weight=1, connect_timeout=1.0, read_timeout=1.0,
            health="healthy",
        )  # fmt: skip
        assert balancer.pick([info], set()) == info

    yield hold
    balancer.reset()
    if settings.REDIS_URL:
        get_redis().delete(inflight.routers_inflight_key())


def _page_until(staff_client, url, text):
    from ops.fleet import fleet_cache_clear

    deadline = time.monotonic() + 15
    while True:
        fleet_cache_clear()  # the dashboard's own 5 s cache (not cache.clear(): a FLUSHDB)
        html = staff_client.get(url).content.decode()
        if text in html:
            return html
        assert time.monotonic() < deadline, f"{text!r} never on {url}"
        time.sleep(0.05)


def test_pool_page_and_dashboard_show_requests_in_flight_across_workers(
    staff_client, fleet, in_flight, monkeypatch
):
    from django.conf import settings

    from inference import inflight

    first, second = fleet["routers"]
    in_flight(first)
    in_flight(first)
    in_flight(second)
    expected = {first.pk: 2, second.pk: 1}
    if settings.REDIS_URL:
        # Another worker holds three more on the first router: the pages add them up.
        inflight.inflight_publish(process="elsewhere:1:x", counts={first.pk: 3})
        expected[first.pk] += 3
    pool_page = f"/admin/catalog/routerpool/{fleet['pool'].pk}/change/"
    html = _page_until(staff_client, pool_page, f'data-in-flight="{expected[first.pk]}"')
    assert f'<span data-in-flight="{expected[second.pk]}">' in html
    assert ("(this process only)" in html) == (not settings.REDIS_URL)
    dashboard = _page_until(staff_client, "/admin/", f'data-in-flight="{expected[first.pk]}"')
    row = dashboard.split(f'data-router="{second.pk}"', 1)[1].split("</tr>", 1)[0]
    assert f'data-in-flight="{expected[second.pk]}"' in row
    assert ("In flight (this process)" in dashboard) == (not settings.REDIS_URL)

    reads = []
    real = inflight.routers_in_flight
    monkeypatch.setattr(inflight, "routers_in_flight", lambda **kw: reads.append(1) or real(**kw))
    staff_client.get(pool_page)
    assert len(reads) == 1  # one Redis round trip per page, however many routers


# --- the pool page and its actions ------------------------------------------------------------


def test_the_pool_page_shows_routers_with_state_figures_and_actions(
    staff_client, fleet, alice, alice_key
):
    key, _ = alice_key
    first = fleet["routers"][0]
    usage_records(alice, key, n=4, router_id=first.pk, latency_ms=300)
    health_rollup()
    html = staff_client.get(
        f"/admin/catalog/routerpool/{fleet['pool'].pk}/change/"
    ).content.decode()
    assert "4 req, 0 err, 300 ms" in html
    assert f"/admin/catalog/router/{first.pk}/act/drain/" in html
    assert f"/admin/catalog/router/{first.pk}/act/probe/" in html
    assert f"/admin/catalog/router/{first.pk}/try/" in html
    assert 'id="change-weights"' in html
    assert 'data-state="healthy"' in html


def test_draining_asks_first_with_the_resulting_shares_then_is_on_record(
    staff_client, staff, fleet
):
    router = fleet["routers"][0]
    url = f"/admin/catalog/router/{router.pk}/act/drain/"
    page = staff_client.get(url).content.decode()
    assert "healthy</strong> → <strong>draining" in page
    assert page.count("50%") == 2 and "100%" in page and "0%" in page
    router.refresh_from_db()
    assert not router.draining  # asking changed nothing

    response = staff_client.post(url)
    assert response.status_code == 302
    router.refresh_from_db()
    assert router.draining
    entry = StaffAction.objects.get(action="router.drain")
    assert (entry.actor, entry.before, entry.after) == (
        staff, {"draining": False}, {"draining": True},
    )  # fmt: skip


def test_an_unknown_router_action_is_a_404(staff_client, fleet):
    router = fleet["routers"][0]
    assert staff_client.get(f"/admin/catalog/router/{router.pk}/act/explode/").status_code == 404
    assert staff_client.get("/admin/catalog/router/999999/act/drain/").status_code == 404


def test_probe_records_the_result(staff_client, fleet, sims):
    router = fleet["routers"][1]
    sims[1].stop()
    staff_client.post(f"/admin/catalog/router/{router.pk}/act/probe/")
    router.refresh_from_db()
    assert router.health == "unhealthy"
    entry = StaffAction.objects.get(action="router.probe")
    assert entry.after["health"] == "unhealthy"


def test_weights_show_each_routers_share_before_they_apply(staff_client, staff, fleet):
    a, b = fleet["routers"]
    url = f"/admin/catalog/routerpool/{fleet['pool'].pk}/weights/"
    page = staff_client.post(url, {f"w{a.pk}": 3, f"w{b.pk}": 1}).content.decode()
    assert "1 → 3" in page and "75%" in page and "25%" in page
    a.refresh_from_db()
    assert a.weight == 1
    response = staff_client.post(url, {f"w{a.pk}": 3, f"w{b.pk}": 1, "confirmed": "yes"})
    assert response.status_code == 302
    a.refresh_from_db()
    assert a.weight == 3
    entry = StaffAction.objects.get(action="router.weight")
    assert (entry.actor, entry.before, entry.after) == (staff, {"weight": 1}, {"weight": 3})


def test_bad_weights_are_a_form_error_not_a_500(staff_client, fleet):
    a, b = fleet["routers"]
    url = f"/admin/catalog/routerpool/{fleet['pool'].pk}/weights/"
    response = staff_client.post(url, {f"w{a.pk}": "0", f"w{b.pk}": "lots"})
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not StaffAction.objects.exists()


# --- try this model / router ------------------------------------------------------------------


def test_try_this_model_goes_through_the_pipeline_as_the_staff_members_key(
    staff_client, staff, fleet
):
    response = staff_client.post(
        f"/admin/catalog/catalogmodel/{fleet['model'].pk}/try/", {"prompt": "Hello there"}
    )
    html = response.content.decode()
    assert 'id="try-answer"' in html
    served = html.split('id="try-router">', 1)[1].split("<", 1)[0]
    assert served in {"eu-0", "eu-1"}
    record = UsageRecord.objects.get(user_id=staff.pk)
    assert record.outcome == "ok" and record.model == LLAMA
    assert str(Router.objects.get(pk=record.router_id)) == served


def test_try_this_router_checks_a_disabled_router_directly(staff_client, fleet):
    router = fleet["routers"][1]
    router.enabled = False
    router.save()
    html = staff_client.post(
        f"/admin/catalog/router/{router.pk}/try/",
        {"prompt": "ping", "model": fleet["model"].pk},
    ).content.decode()
    assert 'id="try-answer"' in html and "eu-1" in html
    assert not UsageRecord.objects.exists()


def test_trying_a_dead_router_says_why(staff_client, fleet, sims):
    router = fleet["routers"][0]
    sims[0].stop()
    html = staff_client.post(
        f"/admin/catalog/router/{router.pk}/try/",
        {"prompt": "ping", "model": fleet["model"].pk},
    ).content.decode()
    assert 'id="try-error"' in html and "upstream" in html


# --- every staff action on record -------------------------------------------------------------


def test_a_plan_edit_is_recorded_before_and_after(staff_client, staff, plan):
    form = {
        "name": plan.name,
        "description": "",
        "is_default": "on",
        "requests_per_minute": "10",
        "tokens_per_minute": plan.tokens_per_minute,
        "max_concurrent_requests": plan.max_concurrent_requests,
        "all_models": "on",
    }
    response = staff_client.post(f"/admin/accounts/plan/{plan.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = StaffAction.objects.get(action="plan.change")
    assert entry.actor == staff
    assert (entry.before, entry.after) == (
        {"requests_per_minute": 1000}, {"requests_per_minute": 10},
    )  # fmt: skip


def test_bulk_plan_moves_ask_first_and_record_each_organization(staff_client, staff, alice, bob):
    from accounts.selectors import personal_org

    pro = Plan.objects.create(name="pro")
    orgs = [personal_org(alice), personal_org(bob)]
    form = {"action": f"set_plan_{pro.pk}", "_selected_action": [o.pk for o in orgs]}
    page = staff_client.post("/admin/accounts/organization/", form).content.decode()
    assert 'id="confirm-rows"' in page and "alice" in page and "bob" in page
    assert personal_org(alice).plan != pro
    staff_client.post("/admin/accounts/organization/", {**form, "confirmed": "yes"})
    assert personal_org(alice).plan == pro
    entries = StaffAction.objects.filter(action="org.set_plan")
    assert {e.target_label for e in entries} == {"alice", "bob"}
    assert {(e.before["plan"], e.after["plan"]) for e in entries} == {("free", "pro")}


def test_suspension_and_key_revocation_are_recorded(staff_client, staff, alice, alice_key):
    key, _ = alice_key
    staff_client.post(
        "/admin/accounts/user/",
        {"action": "suspend_selected", "_selected_action": [alice.pk], "confirmed": "yes"},
    )
    staff_client.post(
        "/admin/apikeys/apikey/",
        {"action": "revoke_selected", "_selected_action": [key.pk], "confirmed": "yes"},
    )
    assert StaffAction.objects.get(action="user.suspend").after == {"is_active": False}
    assert StaffAction.objects.get(action="apikey.revoke").actor == staff


def test_apply_config_runs_are_recorded(tmp_path, plan):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"pools": [{"name": "p", "routers": []}]}))
    call_command("apply_config", str(path), stdout=io.StringIO())
    entry = StaffAction.objects.get(action="catalog.apply_config")
    assert entry.actor is None and entry.actor_label.startswith("apply_config by ")
    assert entry.after["file"] == str(path) and "1 pools" in entry.after["applied"]


def test_a_router_edit_records_the_key_change_but_never_the_key(staff_client, fleet):
    router = fleet["routers"][0]
    form = {
        "pool": router.pool_id, "name": "renamed", "base_url": router.base_url,
        "api_version": "v1", "session_id": 1, "token": "a-new-secret-token", "weight": 2,
        "enabled": "on", "connect_timeout": 3.0, "read_timeout": "",
    }  # fmt: skip
    response = staff_client.post(f"/admin/catalog/router/{router.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = StaffAction.objects.get(action="router.change")
    assert entry.after == {"name": "renamed", "weight": 2, "token": "changed"}
    assert "a-new-secret-token" not in json.dumps([entry.before, entry.after])
    assert "default-dev-token" not in json.dumps([entry.before, entry.after])


def test_the_audit_list_is_read_only_filterable_and_names_the_operator(staff_client, fleet):
    router = fleet["routers"][0]
    staff_client.post(f"/admin/catalog/router/{router.pk}/act/disable/")
    html = staff_client.get("/admin/audit/staffaction/?action=router.disable").content.decode()
    assert (
        "staff@example.com" in html and "router.disable" in html and "enabled: True → False" in html
    )
    assert staff_client.get("/admin/audit/staffaction/add/").status_code == 403
    entry = StaffAction.objects.get()
    assert staff_client.post(f"/admin/audit/staffaction/{entry.pk}/delete/").status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/catalog/router/",
        "/admin/catalog/routerpool/{pool}/change/",
        "/admin/audit/staffaction/",
        "/admin/ops/incident/",
        "/admin/ops/modelhealth/",
        "/admin/ops/modelday/",
        "/admin/catalog/catalogmodel/",
        "/admin/accounts/user/",
        "/admin/accounts/plan/",
        "/admin/apikeys/apikey/",
        "/admin/catalog/routerpool/{pool}/weights/",
        "/admin/catalog/router/{router}/act/drain/",
        "/admin/catalog/router/{router}/try/",
        "/admin/catalog/catalogmodel/{model}/try/",
    ],
)
def test_admin_pages_touched_keep_a_fixed_number_of_queries(staff_client, fleet, path):
    from django.core.cache import cache

    url = path.format(pool=fleet["pool"].pk, router=fleet["routers"][0].pk, model=fleet["model"].pk)
    staff_client.get(url)
    cache.clear()
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(url).status_code == 200
    for i in range(5):
        Router.objects.create(
            pool=fleet["pool"], name=f"more-{i}", base_url=f"http://10.1.1.{i}:5010", session_id=1
        )
        staff_client.post(f"/admin/catalog/router/{fleet['routers'][0].pk}/act/probe/")
        Incident.objects.create(title=f"i{i}", started_at=timezone.now())
    health_rollup()
    cache.clear()
    with CaptureQueriesContext(connection) as many:
        assert staff_client.get(url).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries), url


def test_staff_without_the_router_permission_cannot_act_on_routers(client, make_user, fleet):
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    viewer = make_user("viewer@example.com")
    viewer.is_staff = True
    viewer.save()
    TOTP.activate(viewer, generate_totp_secret())
    client.force_login(viewer)
    router = fleet["routers"][0]
    assert client.post(f"/admin/catalog/router/{router.pk}/act/drain/").status_code == 403
    pool = fleet["pool"].pk
    assert client.get(f"/admin/catalog/routerpool/{pool}/weights/").status_code == 403
    router.refresh_from_db()
    assert not router.draining
